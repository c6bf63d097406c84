"""Recording identity on synthetic records: harmony and pulse survive a break inside a record."""
import numpy as np

from operators.decisions.identity import compare
from tests.conftest import record

A, D_FLAT = 220.0, 277.2      # a major third apart: different pitch classes


def test_a_break_inside_a_record_is_the_same_recording():
    ident = compare(record(20, A, 120), record(10, A, 120, bright=False, seed=1))
    assert ident is not None and ident.chroma > 0.8 and ident.tempo > 0.5
    assert ident.same_recording(0.5, 0.5)


def test_another_record_is_not_even_when_it_shares_the_key_or_the_tempo():
    before = record(20, A, 120)
    assert not compare(before, record(10, D_FLAT, 93, seed=1)).same_recording(0.5, 0.5)
    same_key = compare(before, record(10, A, 93, seed=1))
    same_tempo = compare(before, record(10, D_FLAT, 120, seed=1))
    assert same_key.chroma > 0.8 and same_key.tempo < 0.5 and not same_key.same_recording(0.5, 0.5)
    assert same_tempo.tempo > 0.8 and same_tempo.chroma < 0.5 and not same_tempo.same_recording(0.5, 0.5)


def test_too_little_audio_to_tell():
    assert compare(record(20, A, 120), record(3, A, 120)) is None
    assert compare(np.zeros(0, np.float32), record(10, A, 120)) is None


def test_a_channel_gives_its_debouncer_the_audio_it_heard():
    # the identity test reads the clip history: same times, same scale as the frames that went in
    from pipeline import config
    from pipeline.engine.channel import ChannelDetector
    from pipeline.heads import Heads, hmm_params, load_music_head
    from pipeline.metrics import Metrics
    from pipeline.params import ChannelParams
    cfg = config.load()
    head = load_music_head(cfg, "yamnet", 1024)
    det = ChannelDetector("c", Heads(head, None, None), ChannelParams.from_config(cfg, hmm_params(head, cfg)),
                          Metrics())
    audio = record(12, A, 120)
    frames = [audio[i * 15360:i * 15360 + 15600] for i in range(11)]
    det.on_embedded([i * 0.96 for i in range(11)], np.zeros((11, 1024), np.float32),
                    [i * 0.96 + 0.975 for i in range(11)], frames)
    got = det.debouncer.audio(2.0, 7.0)
    assert len(got) == 5 * 16000
    assert np.max(np.abs(got - audio[32000:112000])) < 1e-3


def test_the_index_and_the_requests_name_a_play_alike(tmp_path):
    """The engine's checks find a play's answer by the id its requests carry. A song starting at a
    frame time with more decimals than the request keeps (2794.1048... s, sent as 2794.105) must
    not land on the next millisecond in UTC, or the answer is never found (the play is then
    neither indexed nor asked again when the index hears another recording)."""
    from pipeline import config
    from pipeline.clock import StreamClock
    from pipeline.engine.channel import ChannelDetector
    from pipeline.heads import Heads, hmm_params, load_music_head
    from pipeline.identity.index import AudioIndex
    from pipeline.identity.store import SqliteStore
    from pipeline.metrics import Metrics
    from pipeline.params import ChannelParams
    from operators.decisions.debounce import RequestIntent
    cfg = config.load()
    head = load_music_head(cfg, "yamnet", 1024)
    index = AudioIndex(SqliteStore(tmp_path / "fp.sqlite"))
    det = ChannelDetector("c", Heads(head, None, None), ChannelParams.from_config(cfg, hmm_params(head, cfg)),
                          Metrics(), StreamClock.fixed("run_start", 1_800_000_000.0006), index)
    t = 2794.1048163265305
    s = round(t, 3)
    record_ = det.request_record(RequestIntent("c", "c:x:0", s, s + 5.0, s + 5.0, s, "new_music", 0))
    assert record_["request_id"] == det.identity.play_id(t) + ":0"
    assert det.clock.iso(t) != det.clock.iso(s)        # the case this is about
