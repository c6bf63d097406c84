"""Debounce on synthetic decided frames: songs are clusters of embeddings."""
import numpy as np
import pytest

from operators.decisions.debounce import Debouncer, DebounceParams

HOP = 0.96


def song(rng, seconds, center=None):
    center = rng.normal(size=64) if center is None else center
    return [center + 0.3 * rng.normal(size=64) for _ in range(int(seconds / HOP))], center


def feed(deb, blocks, lag_s=4.8, newest=None):
    """blocks: list of (kind, embeddings) with kind music|speech|fade|advert (music the talk-over head
    flags); returns the request intents. `newest`, a dict, gets the newest audio time ("t") before
    each frame goes in."""
    out, t = [], 0.0
    kinds = [kind for kind, embs in blocks for _ in embs]
    ahead_n = int(round(lag_s / HOP))           # frames heard, not decided yet
    k = 0
    for kind, embs in blocks:
        for i, e in enumerate(embs):
            music = kind != "speech"
            level = -60.0 if kind == "fade" else -20.0
            if newest is not None:
                newest["t"] = t + 0.975 + lag_s
            ahead = all(x in ("music", "fade") for x in kinds[k + 1:k + 1 + ahead_n])
            out += deb.push(t, music, e, level, -20.0, t + 0.975 + lag_s, talk=kind == "advert", ahead_is_music=ahead)
            t += HOP
            k += 1
    return out


def break_in_record(after):
    """A record with a 2-frame level dip inside (the embedding moves too), as blocks, and its audio:
    a synthetic record before the dip, silence, then `after(seconds)`."""
    from tests.conftest import record
    rng = np.random.default_rng(7)
    intro, _ = song(rng, 40)
    dip = [intro[-1] * 0.01 for _ in range(2)]
    rest, _ = song(rng, 60)
    audio = np.concatenate([record(len(intro) * HOP, 220.0, 120), np.zeros(int(len(dip) * HOP * 16000), np.float32),
                            after(len(rest) * HOP)])
    return [("music", intro), ("fade", dip), ("music", rest)], audio


def test_one_request_per_song_and_none_for_a_jingle():
    rng = np.random.default_rng(0)
    talk = [rng.normal(size=64) for _ in range(30)]
    a, _ = song(rng, 120)
    b, _ = song(rng, 90)
    jingle, _ = song(rng, 6)
    fade = [rng.normal(size=64) * 0.01 + a[-1] for _ in range(2)]
    reqs = feed(Debouncer("c"), [("speech", talk), ("music", a), ("fade", fade), ("music", b),
                                 ("speech", talk), ("music", jingle), ("speech", talk)])
    assert [r.reason for r in reqs] == ["new_music", "song_change"]
    first, second = reqs
    assert 28.8 <= first.song_start < 30 and first.clip_start >= first.song_start
    assert abs((first.clip_end - first.clip_start) - 10.0) < 1e-6
    assert 28.8 + 120 - 2 <= second.song_start <= 28.8 + 124
    assert first.request_id == f"c:{first.song_start:.2f}:0"
    assert second.emitted_at - first.emitted_at >= 20


def test_a_long_song_is_asked_again_only_after_requery_after_s():
    rng = np.random.default_rng(1)
    a, _ = song(rng, 400)
    reqs = feed(Debouncer("c", DebounceParams(requery_after_s=150)), [("music", a)])
    assert [r.reason for r in reqs] == ["new_music", "requery", "requery"]
    assert [r.request_id[-1] for r in reqs] == ["0", "1", "2"]


def test_a_change_of_texture_without_a_level_dip_is_the_same_song():
    # an intro giving way to the verse: the embedding moves as far as at a new record, the level does not
    rng = np.random.default_rng(4)
    intro, _ = song(rng, 40)
    verse, _ = song(rng, 80)
    assert [r.reason for r in feed(Debouncer("c"), [("music", intro), ("music", verse)])] == ["new_music"]
    # with novelty alone allowed to split (the pre-0.2 rule) the same music is paid twice
    reqs = feed(Debouncer("c", DebounceParams(novelty_high=0.5)), [("music", intro), ("music", verse)])
    assert [r.reason for r in reqs] == ["new_music", "song_change"]


def test_a_short_gap_does_not_split_a_song_but_a_long_one_does():
    rng = np.random.default_rng(2)
    a, center = song(rng, 60)
    a2, _ = song(rng, 60, center)
    blip = [rng.normal(size=64) for _ in range(3)]
    talk = [rng.normal(size=64) for _ in range(20)]
    assert len(feed(Debouncer("c"), [("music", a), ("speech", blip), ("music", a2)])) == 1
    assert len(feed(Debouncer("c"), [("music", a), ("speech", talk), ("music", a2)])) == 2


def test_state_round_trip_gives_the_same_requests():
    rng = np.random.default_rng(3)
    a, _ = song(rng, 50)
    b, _ = song(rng, 50)
    fade = [a[-1] * 0.01 for _ in range(2)]
    frames = [(True, e, -60.0 if i in (52, 53) else -20.0) for i, e in enumerate(a + fade + b)]
    whole, split = Debouncer("c"), Debouncer("c")
    out_whole, out_split = [], []
    for i, (m, e, lv) in enumerate(frames):
        out_whole += whole.push(i * HOP, m, e, lv, -20.0, i * HOP + 5.8)
        if i == 40:
            import json
            restored = Debouncer("c")
            restored.restore(json.loads(json.dumps(split.snapshot())))
            split = restored
        out_split += split.push(i * HOP, m, e, lv, -20.0, i * HOP + 5.8)
    assert out_whole == out_split and len(out_whole) == 2


def test_an_advert_on_a_music_bed_costs_nothing_and_the_song_after_it_is_asked_once():
    # the HMM calls the advert music (its bed is music); the talk-over head flags it
    rng = np.random.default_rng(5)
    advert, _ = song(rng, 25)
    a, _ = song(rng, 90)
    reqs = feed(Debouncer("c"), [("advert", advert), ("music", a)])
    assert [r.reason for r in reqs] == ["new_music"]
    assert reqs[0].song_start >= 25 * HOP - HOP and reqs[0].clip_start >= 25 * HOP
    # without the flag the advert and the song are one run, asked once, from inside the advert
    blind = feed(Debouncer("c"), [("music", advert), ("music", a)])
    assert len(blind) == 1 and blind[0].clip_start < 25 * HOP


def test_a_talked_over_intro_is_asked_about_soon_after_the_talk_with_clean_music_only():
    """A presenter talks over a song's first 6 s: with `talk_intro_s` the song is asked about once
    4 s of clean music are in (the newest audio, the talk decided 4.8 s behind it), its clip the
    clean music from where the talk ended; a confirm request follows once the song is confirmed.
    Talk over music for one frame only, or for a whole advert (25 s), or speech with no music
    under it, is no talked intro."""
    rng = np.random.default_rng(8)
    intro, _ = song(rng, 6)
    a, _ = song(rng, 60)
    p = DebounceParams(talk_intro_s=4.0, first_request_s=8.0, cooldown_s=0.0)
    newest = {}
    reqs = feed(Debouncer("c", p), [("advert", intro), ("music", a)], newest=newest)
    assert [r.reason for r in reqs] == ["talk_intro", "confirm"]
    # answered "not known" from clean music: the provider does not know the song, no confirm
    unknown = Debouncer("c", p)
    push = unknown.push

    def answered(*args, **kw):
        if unknown.requested:
            unknown.unknown = True
        return push(*args, **kw)
    unknown.push = answered
    assert [r.reason for r in feed(unknown, [("advert", intro), ("music", a)])] == ["talk_intro"]
    start = 6 * HOP
    assert reqs[0].song_start == pytest.approx(start) and reqs[0].clip_start == pytest.approx(start)
    assert reqs[0].emitted_at - start == pytest.approx(4.8 + 0.975, abs=0.05)   # the first clean frame decided
    advert, _ = song(rng, 25)
    # the talk-over head calls two frames in the middle of an advert clean: still one advert
    flicker = [("advert", advert[:12]), ("music", advert[12:14]), ("advert", advert[14:])]
    for blocks in ([("advert", intro[:1]), ("music", a)], [("speech", intro), ("music", a)],
                   [("advert", advert), ("music", a)], flicker + [("music", a)]):
        later = feed(Debouncer("c", p), blocks)
        assert later[0].reason == "new_music" and later[0].emitted_at - later[0].song_start >= 8.0
    off = feed(Debouncer("c", DebounceParams(first_request_s=8.0, cooldown_s=0.0)), [("advert", intro), ("music", a)])
    assert off[0].reason == "new_music" and off[0].emitted_at - off[0].song_start >= 8.0


def test_a_jingle_then_a_short_gap_then_a_song_cuts_the_clip_from_the_song():
    rng = np.random.default_rng(6)
    jingle, _ = song(rng, 4)     # shorter than the change test's windows: only the gap can split it off
    gap = [rng.normal(size=64) for _ in range(2)]
    a, _ = song(rng, 90)
    reqs = feed(Debouncer("c"), [("music", jingle), ("speech", gap), ("music", a)])
    song_start = (len(jingle) + len(gap)) * HOP
    assert len(reqs) == 1 and reqs[0].song_start == song_start and reqs[0].clip_start > song_start


def test_a_break_inside_a_record_is_not_a_new_song_when_harmony_and_pulse_go_on():
    # the embedding moves and the level dips, as at a change of record; the audio says it is the same
    # record (operators.decisions.identity), so it is asked once; another record behind the same break is asked again
    from tests.conftest import record

    def audio_of(after):
        blocks, a = break_in_record(after)
        return blocks, lambda s, e: a[max(0, int(s * 16000)):max(0, int(e * 16000))]

    blocks, same = audio_of(lambda sec: record(sec, 220.0, 120, bright=False, seed=1))
    _, other = audio_of(lambda sec: record(sec, 277.2, 93, seed=1))
    deb = Debouncer("c", audio=same)
    assert [r.reason for r in feed(deb, blocks)] == ["new_music"] and deb.same_recording_vetoes == 1
    assert [r.reason for r in feed(Debouncer("c", audio=other), blocks)] == ["new_music", "song_change"]
    # without audio (or with the test off) the break costs a second request
    assert len(feed(Debouncer("c"), blocks)) == 2
    off = DebounceParams(same_chroma=2.0, same_tempo=2.0)
    assert len(feed(Debouncer("c", off, audio=same), blocks)) == 2


def test_a_jingle_run_straight_into_a_song_is_not_in_the_clip():
    # no gap the HMM would see: only the level dip where the jingle ends and the song fades in
    rng = np.random.default_rng(8)
    jingle, _ = song(rng, 4)     # shorter than the change test's windows: only the dip can split it off
    dip = [jingle[-1] * 0.01]
    a, _ = song(rng, 90)
    blocks = [("music", jingle), ("fade", dip), ("music", a)]
    reqs = feed(Debouncer("c"), blocks)
    assert len(reqs) == 1 and reqs[0].clip_start > len(jingle) * HOP
    blind = feed(Debouncer("c", DebounceParams(restart_on_early_dip=False)), blocks)
    assert len(blind) == 1 and blind[0].clip_start < len(jingle) * HOP


def test_the_history_the_config_check_asks_for_holds_what_the_identity_test_reads(monkeypatch):
    # config refuses a debounce.history_s below history_needed_s: with exactly that much audio held,
    # counted back from the newest audio (a whole chunk ahead of the decisions, the worst case), the
    # test still gets its full identity_before_s of the old side
    from operators.decisions import debounce
    from tests.conftest import record
    p, lag_frames, chunk_s = DebounceParams(), 4, 2.0
    held = debounce.history_needed_s(p, lag_frames, chunk_s)
    blocks, a = break_in_record(lambda sec: record(sec, 220.0, 120, bright=False, seed=1))
    newest = {"t": 0.0}

    def history(s, e):
        lo = max(s, newest["t"] + chunk_s - held)
        return a[max(0, int(lo * 16000)):max(0, int(e * 16000))]

    sides = []
    real = debounce.compare
    monkeypatch.setattr(debounce, "compare", lambda before, after: sides.append(len(before)) or real(before, after))
    deb = Debouncer("c", p, audio=history)
    feed(deb, blocks, lag_s=lag_frames * HOP, newest=newest)
    assert sides == [int(p.identity_before_s * 16000)] and deb.same_recording_vetoes == 1


def test_a_song_begun_by_the_index_waits_for_a_jingle_only_where_the_level_breaks():
    """A song the index began (the recording before it was predicted to end) waits
    `index_start_wait_s` more only where the level breaks at its start (stations put a jingle after
    a record's end); out of a crossfade it is asked at `first_request_s` like any song. A dip found
    later than a jingle's length after the start ends whatever aired there: a song of its own."""
    rng = np.random.default_rng(11)
    a, _ = song(rng, 40)
    p = DebounceParams(first_request_s=8.0, index_start_wait_s=4.0, cooldown_s=0.0)
    steady = np.random.default_rng(1).normal(0, 0.1, 16000 * 200).astype(np.float32)
    broken = steady.copy()
    steady[int(99.0 * 16000):int(99.1 * 16000)] *= 0.01     # one 0.1 s block: a drum's gap, not a break
    broken[int(100.4 * 16000):int(100.8 * 16000)] = 0.0     # 0.4 s of silence after the record's end

    def asked(audio, dip_at=None):
        deb = Debouncer("c", p, audio=lambda s, e: audio[int(max(0, s) * 16000):int(e * 16000)])
        deb._start_song(100.0, "predicted_end")
        out, t = [], 100.0
        for e in a:
            lo = -80.0 if dip_at is not None and abs(t - dip_at) < 0.5 else -20.0
            out += deb.push(t, True, e, lo, -20.0, t + 5.8)
            t += HOP
        return out[0], deb
    first, _ = asked(steady)
    assert first.reason == "predicted_end" and first.emitted_at - 100.0 == pytest.approx(8.0, abs=1.0)
    first, _ = asked(broken)
    assert first.reason == "predicted_end" and first.emitted_at - 100.0 == pytest.approx(12.0, abs=1.0)
    assert first.clip_start >= first.emitted_at - p.clip_s - 0.01       # the newest audio, after a jingle
    first, deb = asked(broken, dip_at=100.0 + 6 * HOP)                   # a 5.8 s jingle, then the song
    assert first.reason == "new_music" and first.song_start == pytest.approx(100.0 + 6 * HOP)
    assert first.emitted_at - first.song_start == pytest.approx(8.0, abs=1.0)


def test_a_song_the_index_knows_as_unknown_is_asked_with_the_audio_it_heard():
    """The index heard the song's newest audio as an item the provider did not know: no early
    request, and the confirmed one carries that audio (the recognizer answers it for free; the
    song's own start may lie before anything an earlier play's entry holds)."""
    rng = np.random.default_rng(12)
    a, _ = song(rng, 30)
    deb = Debouncer("c", DebounceParams(first_request_s=8.0, min_music_s=12.0, cooldown_s=0.0))
    out, t = [], 0.0
    for e in a:
        if t >= 1.0 and not deb.hold:
            deb.hold, deb.heard = True, (6.0, 12.0)       # as pipeline.identity.live sets them
        out += deb.push(t, True, e, -20.0, -20.0, t + 5.8)
        t += HOP
    assert [r.reason for r in out] == ["new_music"]
    assert (out[0].clip_start, out[0].clip_end) == (6.0, 12.0) and out[0].emitted_at - out[0].song_start >= 12.0


def test_music_resuming_an_unknown_song_after_a_short_gap_is_not_asked_early():
    """A song the provider did not know goes quiet for 10 s (the music head hears no music), then
    its last 9 s play: that is the same song, not asked early (only once confirmed, which a 9 s
    tail never is), and the channel's pacing holds as after a request. Other music after the gap,
    the same after a song that was known, or music after a gap where a voice was heard (the
    talk-over head: a presenter, an advert), is asked early as usual."""
    rng = np.random.default_rng(13)
    a, center = song(rng, 40)
    tail, _ = song(rng, 9, center=center)
    other, _ = song(rng, 9)
    quiet = [rng.normal(size=64) for _ in range(11)]
    p = DebounceParams(first_request_s=8.0, min_music_s=12.0, cooldown_s=20.0)

    def asked(after, unknown, voice=False):
        deb = Debouncer("c", p)
        out, t = [], 0.0
        for kind, embs in (("music", a), ("speech", quiet), ("music", after), ("speech", quiet)):
            for k, e in enumerate(embs):
                talk = voice and kind == "speech" and k in (3, 4)
                out += [r for r in deb.push(t, kind == "music", e, -20.0, -20.0, t + 5.8, talk=talk) if t > 45.0]
                if kind == "music" and t < 45.0:
                    deb.unknown = unknown          # as pipeline.identity.live sets it
                t += HOP
        return out, deb
    out, deb = asked(tail, unknown=True)
    assert out == [] and deb.last_request_at > 50.0
    assert [r.reason for r in asked(tail, unknown=False)[0]] == ["new_music"]
    assert [r.reason for r in asked(other, unknown=True)[0]] == ["new_music"]
    assert [r.reason for r in asked(tail, unknown=True, voice=True)[0]] == ["new_music"]


def test_a_song_the_index_opened_ahead_of_the_decisions_stays_open_through_the_talk_before_it():
    """The index found a song at 0 s under 12 s of talk, its clean music from 12 s, before the
    decisions got there: the decided talk after it is no gap (a gap of more than `gap_keep_s`
    would end the song), and the clean music goes on in that song, which is not asked again."""
    rng = np.random.default_rng(9)
    talk, _ = song(rng, 12)
    a, _ = song(rng, 40)
    deb = Debouncer("c", DebounceParams(first_request_s=8.0, talk_intro_s=4.0, cooldown_s=0.0))
    deb.open_song(0.0, "index_match", 12 * HOP)
    deb.request_now(12 * HOP - 0.5, 12 * HOP + 3.0, 12 * HOP + 3.0, "index_match")
    reqs = feed(deb, [("advert", talk), ("music", a)])
    assert reqs == [] and deb.song_start == 0.0 and deb.requests == 1
    # without the index, the same talk is a gap: the song would have closed in it
    deb = Debouncer("c", DebounceParams(first_request_s=8.0, talk_intro_s=4.0, cooldown_s=0.0))
    deb.song_start = 0.0
    feed(deb, [("advert", talk)])
    assert deb.song_start is None


def test_a_request_held_back_by_the_cooldown_is_asked_with_the_newest_confirmed_audio():
    """A song that starts soon after the last request waits for the channel's cooldown; by then the
    clip from its start is old news (the song may have ended, and the answer is shown when it comes):
    it is asked with the newest confirmed audio instead."""
    rng = np.random.default_rng(10)
    a, _ = song(rng, 20)
    b, _ = song(rng, 90)
    fade = [rng.normal(size=64) * 0.01 + a[-1] for _ in range(2)]
    reqs = feed(Debouncer("c", DebounceParams(cooldown_s=45.0)), [("music", a), ("fade", fade), ("music", b)])
    assert [r.reason for r in reqs] == ["new_music", "song_change"]
    held = reqs[1]
    assert held.emitted_at - reqs[0].emitted_at >= 45.0
    assert held.song_start < held.clip_start and held.emitted_at - held.clip_end <= 13.5
    assert held.clip_end - held.clip_start == pytest.approx(10.0)


def test_an_early_request_skips_what_aired_before_a_break_and_waits_out_a_gap():
    """Asked ahead of its confirmed boundaries, a song is asked from after the last break in level
    (a jingle run into it, the decisions not there yet), once `first_request_s` of music follows
    it; and not while the newest audio is a gap (what aired has ended: a jingle before speech)."""
    rng = np.random.default_rng(13)
    a, _ = song(rng, 40)
    p = DebounceParams(first_request_s=8.0, talk_intro_s=4.0, cooldown_s=0.0)
    noise = np.random.default_rng(2).normal(0, 0.1, 16000 * 200).astype(np.float32)

    def first(reason, audio, ahead=lambda newest: True):
        deb = Debouncer("c", p, audio=lambda s, e: audio[int(max(0, s) * 16000):int(e * 16000)])
        deb._start_song(100.0, reason)
        out, t = [], 100.0
        for e in a:
            out += deb.push(t, True, e, -20.0, -20.0, t + 5.8, ahead_is_music=ahead(t + 5.8))
            t += HOP
        return out[0]
    jingle_first = noise.copy()
    jingle_first[int(106.0 * 16000):int(106.5 * 16000)] = 0.0      # a 6 s jingle from 100, a gap, the song
    for reason in ("song_change", "predicted_end"):
        q = first(reason, jingle_first)
        assert q.reason == reason and q.clip_start >= 106.45
        assert q.emitted_at - 106.5 == pytest.approx(8.0, abs=1.0)
    # a talked-over intro is asked as soon as its clean music is 4 s long, but not while the newest
    # audio is a gap; where speech follows the gap (the frames ahead), only once confirmed
    ends = noise.copy()
    ends[int(105.3 * 16000):int(106.0 * 16000)] = 0.0
    assert first("talk_intro", noise).emitted_at == pytest.approx(105.8)
    assert first("talk_intro", ends).emitted_at == pytest.approx(105.8 + HOP)
    q = first("talk_intro", ends, ahead=lambda newest: newest < 106.0)
    assert q.reason == "talk_intro" and q.emitted_at - 100.0 >= 12.0


def test_a_song_the_provider_did_not_know_is_split_only_by_material_unlike_it():
    """A break in level inside a song with new material moderately like the old (a section of one
    record) starts a new song, unless the song is one the provider did not know: with no recording
    to carry it across the break, each piece would be paid as a new item, so the new material must
    be as unlike it as a resuming song's (RESUME_SIMILARITY)."""
    from operators.decisions.debounce import RESUME_SIMILARITY
    rng = np.random.default_rng(21)
    a = rng.normal(size=64)
    a *= 8.0 / np.linalg.norm(a)
    o = rng.normal(size=64)
    o -= (o @ a) / (a @ a) * a
    o *= 8.0 / np.linalg.norm(o)
    cos = 0.74                                   # between RESUME_SIMILARITY and max_self_similarity
    b = cos * a + np.sqrt(1 - cos ** 2) * o
    first, _ = song(rng, 40, center=a)
    dip = [a * 0.01 for _ in range(2)]
    second, _ = song(rng, 40, center=b)

    def asked(unknown):
        deb = Debouncer("c", DebounceParams(cooldown_s=0.0))
        out, t = [], 0.0
        for kind, embs in (("music", first), ("fade", dip), ("music", second)):
            for e in embs:
                if t > 20.0:
                    deb.unknown = unknown           # the song's answer: not known to the provider
                out += deb.push(t, True, e, -60.0 if kind == "fade" else -20.0, -20.0, t + 5.8)
                t += HOP
        return [r.reason for r in out]
    assert RESUME_SIMILARITY < cos < DebounceParams().max_self_similarity
    assert asked(unknown=False) == ["new_music", "song_change"]
    assert asked(unknown=True) == ["new_music"]
