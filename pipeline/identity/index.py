"""The local fingerprint index as the recognizer and the engine use it.

The recognizer asks it before paying (`answer`): a clip that matches a recording the provider
already named is answered locally (`local_match`); one that matches an item the provider did not
know, within `unknown_window_days` of that answer, is `known_unidentified`; anything else is paid,
and the clip and the answer go into the index (`learn`). The engine adds each play's own audio as
it airs (`add_play`, pipeline.identity.live), so a later play matches at any offset.

Any failure of the store (a corrupt file, an unreachable database) is logged with what was being
done, counted in `onair_identity_index_errors_total`, and treated as "not in the index": the
request is paid as without an index, never answered with a guess.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from operators.audio.constants import SAMPLE_RATE
from operators.fingerprint.landmarks import FRAME_S, MAX_DT, FingerprintParams, Match, best_match, fingerprint
from operators.utc import iso, parse_iso
from pipeline.identity.store import IndexError_, PostgresStore, SqliteStore
from pipeline.metrics import Metrics
from pipeline.recognition.providers import ms_to_s
from pipeline.secrets import read_secret

log = logging.getLogger("onair.identity")
PAIR_S = MAX_DT * FRAME_S      # a landmark's pair reaches this far after its anchor
UNKNOWN_BEFORE_S = 10.0       # an unknown item's play is indexed from this long before the clip heard ...
UNKNOWN_AFTER_S = 240.0       # ... to this long after the clip's start: the debouncer's re-query horizon,
                              # the longest it takes a run of music without a boundary to be one song
ANSWER_FIELDS = ("title", "artist", "album", "isrc", "provider", "score", "genres")


@dataclass(frozen=True)
class IdentityParams:
    enabled: bool = True
    backend: str = "sqlite"
    path: str = "fingerprints.sqlite"
    unknown_window_days: float = 7.0
    min_aligned: int = 25
    min_coverage: float = 0.5
    peaks_per_s: int = 22
    min_clip_s: float = 3.0
    check_every_s: float = 2.0
    check_window_s: float = 6.0
    misses_to_change: int = 3

    @classmethod
    def from_config(cls, section: dict) -> "IdentityParams":
        return cls(**{k: v for k, v in section.items() if k in cls.__dataclass_fields__})

    @property
    def fp(self) -> FingerprintParams:
        return FingerprintParams(self.peaks_per_s, self.min_aligned, self.min_coverage)


@dataclass(frozen=True)
class LocalAnswer:
    outcome: str            # local_match | known_unidentified
    item: dict              # the canonical item, with its label
    match: Match
    position_s: float | None   # position in the recording at the query's end, when known


def recording_ref(answer: dict) -> str:
    """What makes two answers one recording: the provider's id, else the ISRC, else title + artist."""
    extra = answer.get("extra") or {}
    for key in ("acrid",):
        if extra.get(key):
            return f"{key}:{extra[key]}"
    if answer.get("isrc"):
        return f"isrc:{answer['isrc']}"
    return f"name:{(answer.get('title') or '').strip().lower()}|{(answer.get('artist') or '').strip().lower()}"


class AudioIndex:
    def __init__(self, store, params: IdentityParams = IdentityParams(), metrics: Metrics | None = None,
                 clock=time.time):
        self.store = store
        self.p = params
        self.metrics = metrics or Metrics()
        self.clock = clock
        self._last_error_log = -1e9

    # -- failures
    def _failed(self, op: str, e: Exception, channel: str | None = None) -> None:
        self.metrics.identity_errors.labels(op).inc()
        now = time.monotonic()
        if now - self._last_error_log > 60:      # one line a minute, not one per request
            self._last_error_log = now
            log.error("%sfingerprint index %s failed, paying the provider instead: %s",
                      f"channel {channel}: " if channel else "", op, e)

    def create(self) -> bool:
        try:
            self.store.create()
            return True
        except IndexError_ as e:
            self._failed("open", e)
            return False

    # -- lookups
    def lookup(self, pcm: np.ndarray, by: str = "recognizer", channel: str | None = None
               ) -> tuple[Match, dict] | None:
        """The canonical item `pcm` (float, 16 kHz) is, or None (no match, or the index failed)."""
        if len(pcm) < self.p.min_clip_s * SAMPLE_RATE:
            return None
        t0 = time.perf_counter()
        h, t = fingerprint(pcm, self.p.fp)
        return self.lookup_hashes(h, t, len(pcm) / SAMPLE_RATE, by, channel, t0)

    def lookup_hashes(self, h: np.ndarray, t: np.ndarray, seconds: float, by: str, channel: str | None = None,
                      t0: float | None = None) -> tuple[Match, dict] | None:
        t0 = time.perf_counter() if t0 is None else t0
        try:
            rh, items, rt = self.store.rows_for(h)
            for _ in range(4):
                m = best_match(h, t, rh, items, rt, int(seconds / FRAME_S), self.p.fp, self._groups)
                item = self.store.canonical(m.item) if m is not None else None
                if m is None or item is not None:
                    break
                # a pruned item whose entries wait for their segment's next merge: the next best
                keep = items != m.item
                rh, items, rt = rh[keep], items[keep], rt[keep]
        except IndexError_ as e:
            self._failed("lookup", e, channel)
            return None
        finally:
            self.metrics.identity_lookups.labels(by).observe(time.perf_counter() - t0)
        return (m, item) if item is not None else None

    def _groups(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """best_match's groups: an entry placed in its canonical item counts with it (its hashes
        moved into the canonical's time); any other entry stands alone."""
        placed = self.store.groups(ids.tolist())
        group, shift = ids.copy(), np.zeros(len(ids), np.int64)
        for k, i in enumerate(ids.tolist()):
            if i in placed:
                group[k] = placed[i][0]
                shift[k] = int(round(placed[i][1] / FRAME_S))
        return group, shift

    def answer(self, pcm: np.ndarray, channel: str, play_id: str | None = None,
               clip_in_play_s: float | None = None) -> LocalAnswer | None:
        """A local answer for a clip about to be paid for, or None (pay). `clip_in_play_s`: where the
        clip ends, in seconds from its song's start (places the recording in the play)."""
        found = self.lookup(pcm, "recognizer", channel)
        if found is None:
            return None
        m, item = found
        if item["kind"] == "recording":
            outcome = "local_match"
        elif item["kind"] == "unknown":
            # the provider's "unknown" is trusted for the window; then asked again (stale_unknown: the
            # answer relabels this item, and a recording found so names its earlier plays)
            outcome = "known_unidentified" if self._unknown_fresh(item) else "stale_unknown"
        else:
            return None        # pending: indexed, its answer not in yet
        pos = None
        try:
            row = item if m.item == item["id"] else self.store.item(m.item)
        except IndexError_:
            row = None
        if row is not None and row.get("rec_offset_s") is not None and m.placed:
            # (a loop's match names the recording, not the place in it: a repeat's place would
            # put a song's start at the recording's end, and its title would not be shown)
            pos = row["rec_offset_s"] + m.offset_s + len(pcm) / SAMPLE_RATE
        if outcome == "stale_unknown":
            return LocalAnswer(outcome, item, m, pos)
        try:
            self.store.touch(item["id"], iso(self.clock()))
            if play_id:
                # a loop's match names the recording, not the place in it: the play is not placed
                self.store.set_play(play_id, item["id"], _minus(clip_in_play_s, pos) if m.placed else None)
        except IndexError_ as e:
            self._failed("write", e, channel)
        return LocalAnswer(outcome, item, m, None if pos is None else round(pos, 2))

    def _unknown_fresh(self, item: dict) -> bool:
        try:
            since = parse_iso(item["first_seen"])
        except (TypeError, ValueError):
            return False
        return self.clock() - since <= self.p.unknown_window_days * 86400

    # -- learning
    def learn(self, channel: str, pcm: np.ndarray, answer: dict | None, play_id: str | None,
              stale: dict | None = None, clip_in_play_s: float | None = None) -> int | None:
        """A paid clip and what the provider said of it (None: not known) go into the index. `stale`:
        the unknown item the clip matched, asked again after the window: relabelled, not duplicated."""
        h, t = fingerprint(pcm, self.p.fp)
        now = iso(self.clock())
        seconds = len(pcm) / SAMPLE_RATE
        try:
            if stale is not None:
                return self._relabel(stale, answer, now, play_id)
            end_pos = None
            if answer is None:
                # its own time base: item time 0 is the clip's start, so later plays are placed in it
                item = self.store.new_item("unknown", now, play_id=play_id, channel=channel, rec_offset_s=0.0)
                end_pos = seconds
            else:
                if play_id:
                    self._forget_own_unknown(play_id)
                extra = answer.get("extra") or {}
                h, t, seconds, shift = _matched_part(h, t, seconds, extra)
                ref, label, duration, canon = self._recording(answer)
                end_pos = ms_to_s(extra.get("play_offset_ms"))
                # recording position of item time 0 (the clip's start; the matched part's, trimmed)
                rec_offset = None if end_pos is None else round(end_pos - (len(pcm) / SAMPLE_RATE) + shift, 3)
                if canon is None:
                    item = self.store.new_item("recording", now, play_id=play_id, channel=channel, ref=ref,
                                               answer=label, duration_s=duration, rec_offset_s=rec_offset)
                else:
                    # another stretch of a recording already known: its own time base, same label
                    item = self.store.new_item("indexed", now, play_id=play_id, channel=channel, ref=ref,
                                               duration_s=duration, rec_offset_s=rec_offset, same_as=canon)
            self.store.add_hashes(item, h, t, seconds, seconds)
            target = self.store.canonical(item)["id"]
            self.store.touch(target, now, paid=1)
            if play_id:
                self.store.set_play(play_id, target, _minus(clip_in_play_s, end_pos))
            return target
        except IndexError_ as e:
            self._failed("write", e, channel)
            return None

    def _forget_own_unknown(self, play_id: str) -> None:
        """The play was answered "not known" before, on a clip asked ahead of its confirmed
        boundaries (under a presenter's voice, or with a jingle run into it), and now names a
        recording: the item that answer made, heard in this play alone, goes. Kept, it would answer a
        later play of the recording, or the jingle, as an item the provider does not know."""
        before = self.store.play(play_id)
        item = None if before is None else self.store.item(before[0])
        if item is not None and item["kind"] == "unknown" and item.get("play_id") == play_id \
                and self.store.plays_of(item["id"]) == [play_id]:
            self.store.delete_items([item["id"]])

    def _recording(self, answer: dict) -> tuple[str, dict, float | None, int | None]:
        """What a provider's answer says of its recording: (ref, label, duration, the item already
        holding that recording, or None)."""
        ref = recording_ref(answer)
        duration = ms_to_s((answer.get("extra") or {}).get("duration_ms"))
        return ref, {k: answer.get(k) for k in ANSWER_FIELDS}, duration, self.store.by_ref(ref)

    def _relabel(self, item: dict, answer: dict | None, now: str, play_id: str | None) -> int:
        if answer is None:
            self.store.restart_window(item["id"], now)
        else:
            ref, label, duration, canon = self._recording(answer)
            self.store.label(item["id"], "recording" if canon is None else "indexed", ref=ref, answer=label,
                             duration_s=duration, same_as=canon)
            # its plays' entries were placed in the clip's time base, not in the recording's
            self.store.unplace(item["id"])
        self.store.touch(item["id"], now, paid=1)
        target = self.store.canonical(item["id"])["id"]
        if play_id:
            self.store.set_play(play_id, target)
        return target

    def earlier_plays(self, item: int) -> list[str]:
        """Plays answered by `item` or by items found to be it: a cluster of repeats."""
        return self.store.plays_of(item)

    def add_play(self, channel: str, play_id: str, h: np.ndarray, t: np.ndarray, seconds: float) -> int | None:
        """The engine's fingerprints of one whole play as it aired (frames from the song's start).
        Only the part inside the recording answered is kept: its start where the index's entries
        place the play, its length from the provider's duration; a song whose boundary was missed
        must not carry the next one into the index under its name. An item the provider did not know
        keeps a bounded stretch around the clip heard (_unknown_part). Plays not answered yet, not
        placed, or of a recording without a duration add nothing; nor does a play the index holds."""
        if len(h) == 0:
            return None
        try:
            play = self.store.play(play_id)
            if play is None:
                return None
            target = self.store.canonical(play[0])
            if target is None:
                return None
            # where the recording begins in this play, from all of the play's audio against what the
            # index holds of it: the answer's own offset came from a few seconds, and in music that
            # repeats itself one repeat away (the entry would then run into the next song)
            entries = self.store.placed(target["id"])
            rec_start = self._place(entries, h, t)
            if rec_start is None:
                return None
            if target["kind"] == "unknown":
                lo, hi = self._unknown_part(entries, rec_start, seconds)
            elif target["kind"] != "recording" or not target.get("duration_s"):
                return None
            else:
                duration = float(target["duration_s"])
                lo, hi = max(0.0, rec_start + 1.0), min(seconds, rec_start + duration - 1.0)   # 1 s: crossfades
                if self._covers(target, min(duration, hi - lo)):
                    return None
            span = hi - lo
            if span < 10.0:
                return None
            keep = (t * FRAME_S >= lo) & (t * FRAME_S < hi)
            item = self.store.new_item("indexed", iso(self.clock()), play_id=play_id, channel=channel,
                                       same_as=target["id"], rec_offset_s=round(-rec_start, 3))
            self.store.add_hashes(item, h[keep], t[keep], span, hi)
            self.metrics.identity_indexed.labels(channel).inc(span)
            return item
        except IndexError_ as e:
            self._failed("write", e, channel)
            return None

    def _place(self, entries: dict, h: np.ndarray, t: np.ndarray) -> float | None:
        """Play time where a canonical item has its time 0, as its placed `entries` (Store.placed)
        say from the play's hashes (frames from the play's start); None unless they agree on one place."""
        rh, items, rt = self.store.rows_for(h)
        ok = np.isin(items, np.fromiter(entries, np.int64, len(entries)))
        if not ok.any():
            return None
        shift = np.array([int(round(entries[i][0] / FRAME_S)) for i in items[ok].tolist()], np.int64)
        m = best_match(h, t, rh[ok], np.zeros(int(ok.sum()), np.int64), rt[ok] + shift, int(t.max()) + 1,
                       FingerprintParams(self.p.fp.peaks_per_s, self.p.fp.min_aligned, 0.0))
        return None if m is None or not m.placed else -m.offset_s

    @staticmethod
    def _unknown_part(entries: dict, rec_start: float, seconds: float) -> tuple[float, float]:
        """The part of an unknown item's play worth indexing, in play time: around the stretch the
        provider heard (item time 0 at `rec_start`), so that a later play clipped earlier or later
        (a song split by a detection gap asks about its tail) still matches; bounded, since the
        item's end is not known and a song run into it without a dip must not become "unknown";
        nothing the item's entries already hold (then an empty stretch)."""
        lo, hi = max(0.0, rec_start - UNKNOWN_BEFORE_S), min(seconds, rec_start + UNKNOWN_AFTER_S)
        for _, a, b in entries.values():
            if a + rec_start <= lo + 5.0 and b + rec_start >= hi - 5.0:   # item time -> play time
                return lo, lo
        return lo, hi

    def _covers(self, item: dict, seconds: float) -> bool:
        return self.store.longest_indexed(item["id"]) >= seconds - 10.0


def _matched_part(h: np.ndarray, t: np.ndarray, seconds: float, extra: dict):
    """The part of a clip the provider says matched (ACRCloud's sample_begin/end offsets): a clip
    that began on a jingle and ran into the song must not teach the index that the jingle is the
    song. Returns the hashes of that part, its length and where it begins in the clip; hash frames
    are counted from the part's start, so item time 0 is where the match begins."""
    b, e = ms_to_s(extra.get("sample_begin_ms")), ms_to_s(extra.get("sample_end_ms"))
    if b is None or e is None or e <= b:
        return h, t, seconds, 0.0
    keep = (t * FRAME_S >= b) & (t * FRAME_S < e - PAIR_S)
    shift_frames = int(round(b / FRAME_S))
    return h[keep], (t[keep] - shift_frames).astype(np.int32), min(seconds, e) - b, shift_frames * FRAME_S


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 3)


def open_index(cfg: dict, out_dir: Path | None, metrics: Metrics | None = None, clock=time.time
               ) -> AudioIndex | None:
    """The configured index (None when `identity.enabled` is false). A store that cannot be opened
    is logged and the index is still returned: every lookup then fails the same way (paying)."""
    p = IdentityParams.from_config(cfg["identity"])
    if not p.enabled:
        return None
    store = make_store(cfg, out_dir)
    idx = AudioIndex(store, p, metrics, clock)
    if idx.create():
        log.info("fingerprint index: %s", store.describe())
    return idx


def open_shared_index(cfg: dict, out_dir: Path | None, metrics: Metrics | None = None) -> AudioIndex | None:
    """The index the recognizer and the channels share, beside `recognition.ledger` (in `out_dir`
    when relative): None without a provider, where nothing would ever be identified."""
    if cfg["recognition"]["provider"] == "none":
        return None
    from pipeline.recognition.stage import ledger_path
    return open_index(cfg, ledger_path(cfg, out_dir).parent, metrics)


def make_store(cfg: dict, out_dir: Path | None):
    """The configured store, not opened yet: PostgreSQL, or the SQLite file (`identity.path`
    relative to `out_dir`, else the working directory)."""
    if cfg["identity"]["backend"] == "postgres":
        return PostgresStore(read_secret(cfg, "identity", "postgres_dsn"))
    path = Path(cfg["identity"]["path"])
    return SqliteStore(path if path.is_absolute() or out_dir is None else out_dir / path)
