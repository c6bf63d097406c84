"""The fingerprint index on a channel's own audio, while music plays.

Every `check_every_s` of an open song the newest `check_window_s` of the channel's audio is
fingerprinted and looked up. What it finds moves the debouncer (operators.decisions.debounce):

- a recording the provider named: the song is asked about at once (the recognizer answers it
  from the index, free), so a repeat is titled seconds after it starts;
- another recording than the one identified in this song: the recording changed without a level
  dip (a crossfade, a segue): a new song starts where the old one last matched;
- no match any more, where the index holds the identified recording's audio, `misses_to_change`
  checks in a row: the recording ended: a new song starts;
- the predicted end (the provider's duration and offset, or the index's) has passed and music
  goes on: a new song starts there, asked at once;
- an item the provider did not know (an advert bed, a jingle, an unknown song): no early request;
  the song is asked only after the debouncer's confirmed `min_music_s`, and the recognizer answers
  `known_unidentified`.

The same fingerprints, collected over the song, are the play's entry in the index when the song
ends (AudioIndex.add_play): a later play matches at any offset.
"""
from __future__ import annotations

import logging

import numpy as np

from operators.audio.constants import HOP_S, SAMPLE_RATE
from operators.decisions.debounce import Debouncer, RequestIntent
from operators.fingerprint.landmarks import BUCKET_FRAMES, FRAME_S, MAX_DT, fingerprint
from pipeline.identity.index import AudioIndex
from pipeline.identity.store import IndexError_
from pipeline.recognition.providers import TAIL_MIN_DURATION_S, TAIL_S

log = logging.getLogger("onair.identity")
PAIR_SPAN_S = MAX_DT * FRAME_S      # an anchor this close to a window's end is missing pairs
MIN_PLAY_S = 20.0                   # shorter songs are not worth an entry of their own
COLLECT_MIN_S = 4.0                 # a play's anchors are fingerprinted in stretches of at least this ...
COLLECT_CONTEXT_S = 2.0             # ... with this much audio before each (the onset filter's memory)
BUCKET_S = BUCKET_FRAMES * FRAME_S  # peaks are picked per this stretch
EARLY_START_S = 20.0                # a recording found to have begun this long before the music did is mid-way
END_SOON_S = 15.0                   # misses this close to a predicted end wait for it
RECHECK_S = 0.9                     # a match that needs a second check gets it this soon (a frame's audio)
# clean music ahead of the decisions is looked up from just before it began (talk before it would
# dilute the window's coverage), as soon as `min_clip_s` of it is in; the recording found must have
# begun at most PROBE_BACK_S before it (under talk as long as a talked-over intro runs)
PROBE_LEAD_S, PROBE_BACK_S = 0.5, 15.0
# a probe's match not placed in its recording (a song with repeated sections) is taken alone when no
# other item comes within this factor of it, else when the next probe agrees
PROBE_CLEAR = 3


class LiveIdentity:
    def __init__(self, channel: str, index: AudioIndex, audio, play_id, metrics):
        self.channel = channel
        self.index = index
        self.p = index.p
        self.audio = audio            # callable(start, end) -> (start, float audio) held for the channel
        self.play_id = play_id        # callable(song_start) -> the play's id (channel:song_start_utc)
        self.metrics = metrics
        self.song = None
        self.last_probe = -1e12
        self._probed = None           # (clean_since, what the last probe saw) where it needs a second
        self._reset()

    def _reset(self) -> None:
        self.current = None           # the canonical recording identified in this song
        self.matched = None           # (item row matched, its t_end_s, item time at the check's end, check end)
        self.misses = 0
        self.predicted_end = None
        self.last_check = -1e12
        self._h: list[np.ndarray] = []
        self._t: list[np.ndarray] = []
        self._until = None            # stream time up to which anchors are collected
        self._requested = False
        self._collect_until = float("inf")   # no anchors after the song's first gap
        self._decided = -1e12                 # decided stream time: anchors are collected up to it
        self._last_seen = None        # (item, where it began, placed) of the last check that found a recording
        self._began = None            # where the identified recording began on air, as first found
        self._reasked = False         # asked again: the song's answer named something else
        self._answer_read = False     # the song's answer was in and read (_from_answer)
        self._clean_from = None       # a song opened by probe(): where its clean music began

    def step(self, deb: Debouncer, newest_time: float, music: bool, decided_time: float) -> list[RequestIntent]:
        """After each decided frame (music or not, decided up to `decided_time`): what the index
        says of the newest audio of the open song."""
        if deb.song_start != self.song:
            carried = self._carry(deb.song_start)
            new = deb.song_start
            self.close(deb, end=new if new is not None and self.song is not None and new > self.song else None)
            self.song = deb.song_start
            if carried is not None:
                self.current, self.matched, self.predicted_end, self._began = carried
        if self.song is None:
            return []
        if not music and self._clean_from is not None and decided_time - HOP_S < self._clean_from:
            return []    # what preceded the clean music of a song probe() opened: the song goes on
        if not music:
            # the play's entry ends at its first gap: what follows one (a jingle, the next song
            # after talk) may still be this song to the debouncer, but is not known to be
            self._collect_until = min(self._collect_until, decided_time)
            return []
        self._decided = decided_time
        self._requested = self._requested or deb.requested
        if newest_time - self.last_check < self.p.check_every_s:
            return []
        out: list[RequestIntent] = []
        if self._requested and not self._answer_read:
            self._from_answer(deb, newest_time)
        if self.predicted_end is not None and newest_time >= self.predicted_end + 2.0:
            out += self._change(deb, self.predicted_end, newest_time, "predicted_end")
            if self.song is None:
                return out
        a, pcm = self.audio(max(self.song, newest_time - self.p.check_window_s), newest_time)
        b = a + len(pcm) / SAMPLE_RATE
        if b - a < self.p.min_clip_s:
            return out
        self.last_check = newest_time
        self._collect()
        h, t = fingerprint(pcm, self.p.fp)
        found = self.index.lookup_hashes(h, t, b - a, "engine", self.channel)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("channel %s: check %.2f-%.2f (song %.2f): %s", self.channel, a, b, self.song,
                      None if found is None else (found[1]["id"], found[1]["kind"], found[0]))
        return out + self._decide(deb, found, a, b, newest_time)

    def probe(self, deb: Debouncer, newest_time: float, clean_since: float | None) -> list[RequestIntent]:
        """No song is open, or the open one is in a gap (talk over it), while the frames not decided
        yet hear clean music from `clean_since`: a presenter stopped talking over an intro, or a song
        follows plain speech. The clean music is looked up at once, ahead of the decisions (about
        5 s). A recording the index places as having begun at most PROBE_BACK_S before that music
        (its intro, talked over or not), or one it names clearly (PROBE_CLEAR) or twice in a row,
        opens the song and is asked about (answered from the index). Where the decisions already
        opened a song there, not asked about yet, the probe is a check of it. Anything else waits
        for the decisions, as before."""
        if clean_since is None or not deb.between_songs or newest_time - self.last_probe < RECHECK_S:
            return []
        a = max(clean_since - PROBE_LEAD_S, newest_time - self.p.check_window_s)
        if newest_time - a < self.p.min_clip_s:
            return []
        self.last_probe = newest_time
        a, pcm = self.audio(a, newest_time)
        b = a + len(pcm) / SAMPLE_RATE
        if b - a < self.p.min_clip_s:
            return []
        h, t = fingerprint(pcm, self.p.fp)
        found = self.index.lookup_hashes(h, t, b - a, "engine", self.channel)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("channel %s: probe %.2f-%.2f (clean from %.2f): %s", self.channel, a, b, clean_since,
                      None if found is None else (found[1]["id"], found[1]["kind"], found[0]))
        # the decisions opened a song there, not asked about yet: the probe checks it
        check = self.song is not None and self.song >= clean_since - PROBE_BACK_S and not deb.requested \
            and self.current is None
        last, self._probed = self._probed, None
        if found is None or found[1]["kind"] != "recording":
            if check:
                self.last_check = newest_time
                return self._decide(deb, found, a, b, newest_time)
            return []
        m, item = found
        _, _, _, began, seen = self._place(m, item, a, b)
        intro = began is not None and clean_since - PROBE_BACK_S <= began <= clean_since + PROBE_LEAD_S
        clear = began is None and m.runner_up * PROBE_CLEAR <= m.aligned
        if check:
            self.last_check = newest_time
            if clear:
                self._last_seen = seen      # taken at once, as the check after it would take it
            return self._decide(deb, found, a, b, newest_time)
        agrees = last is not None and last[0] == clean_since and self._agree(last[1], seen)
        if not (intro or clear or agrees):
            self._probed = (clean_since, seen)
            return []
        talk = deb.talk_from
        start = began if intro else (talk if talk is not None and talk >= clean_since - PROBE_BACK_S else clean_since)
        # the request's clip is the probe's window, no shorter (the song starts no later than it): the
        # recognizer looks up the same audio and answers from the index, where a shorter clip can fall
        # under `min_aligned` and be paid
        self._open(deb, min(start, a), clean_since)
        self.last_check, self._last_seen = newest_time, seen     # (taken at once)
        self.metrics.identity_changes.labels(self.channel, "probe").inc()
        return self._decide(deb, found, a, b, newest_time)

    def _open(self, deb: Debouncer, t: float, clean_since: float) -> None:
        """probe() opens a song at t, ahead of the decisions; its entry is collected from its clean music."""
        if self.song is not None:
            self.close(deb, end=max(self.song, min(t, self._decided)))
        else:
            self._reset()
        deb.open_song(t, "index_match", clean_since)
        self.song = deb.song_start
        self._until = self._clean_from = clean_since

    def _decide(self, deb: Debouncer, found, a: float, b: float, newest_time: float) -> list[RequestIntent]:
        out: list[RequestIntent] = []
        if found is None or found[1]["kind"] != "recording":
            self._last_seen = None
        if found is None:
            if self.current is not None and self._should_match(b):
                self.misses += 1
                if self.misses >= self.p.misses_to_change and not self._ends_soon(b):
                    out += self._change(deb, self.matched[3], newest_time, "index_change")
            return out
        m, item = found
        if item["kind"] == "unknown":
            deb.hold, deb.unknown = not deb.requested, True
            if deb.hold and a >= self.song:
                deb.heard = (a, b)
            if self.current is not None:
                out += self._change(deb, self._last_heard(a), newest_time, "index_change")
                deb.hold = not deb.requested
            return out
        if item["kind"] != "recording":
            return out
        row, at_end, pos, began, seen = self._place(m, item, a, b)
        if (self.current is None and pos is not None and (item.get("duration_s") or 0) > TAIL_MIN_DURATION_S
                and item["duration_s"] - pos < TAIL_S):
            # the last seconds of a recording, at a song's start: a sting or jingle cut from its
            # end, or its fade; not a song to title
            return out
        last, self._last_seen = self._last_seen, seen
        if (self.current is None or item["id"] != self.current["id"]) and not (
                began is not None and began >= self.song - EARLY_START_S):
            # a recording found mid-way at a song's start needs two checks in a row that agree on it
            # and on where it began: one window can be a jingle or a bed that sounds like part of a
            # song; one that began with the music (or after it: a crossfade) is taken at once. A
            # loop (not placed) matches one repeat here and another there: the item must agree
            if not self._agree(last, seen):
                # the second check comes with the next frame's audio, not `check_every_s` later:
                # it is what holds the title back
                self.last_check = min(self.last_check, newest_time - self.p.check_every_s + RECHECK_S)
                return out
        if self.current is not None and item["id"] != self.current["id"]:
            # another recording than the one identified: the recording changed without a dip
            t = began if began is not None and began > self.song else self._last_heard(a)
            out += self._change(deb, t, newest_time, "index_change")
        elif self.current is None and deb.requested and began is not None and began > self.song + 10.0:
            # the first recording identified in this song began well after the song did, which was
            # already asked about: the song ran on from something else (a crossfade, a segue)
            out += self._change(deb, began, newest_time, "index_change")
        if self.song is None:
            return out
        if (self.current is not None and item["id"] == self.current["id"] and began is not None
                and self._began is not None and abs(began - self._began) > 1.5):
            # the same recording one repeat away (a loop repeated sample for sample): the place it
            # was found first (or answered) holds, or its predicted end would move by a loop's length
            self.misses = 0
            return out + self._ask(deb, item, a, b, newest_time)
        self._began = began if began is not None else self._began
        self.current, self.misses = item, 0
        deb.identified = True
        self.matched = (m.item, float(row.get("t_end_s") or 0.0), at_end, b)
        if item.get("duration_s") and pos is not None:
            self.predicted_end = b + item["duration_s"] - pos
        return out + self._ask(deb, item, a, b, newest_time)

    def _place(self, m, item: dict, a: float, b: float):
        """What a match of the window [a, b) says: the entry matched, the item's time at the window's
        end, the recording's position there and where it began on air (None where the index does
        not place it), and what was seen (item, where it began or the item's time 0 lay, placed)."""
        row = item if m.item == item["id"] else self.index.store.item(m.item)
        at_end = m.offset_s + (b - a)
        pos = at_end + row["rec_offset_s"] if row.get("rec_offset_s") is not None and m.placed else None
        began = None if pos is None else b - pos
        return row, at_end, pos, began, (item["id"], b - at_end if began is None else began, m.placed)

    @staticmethod
    def _agree(last, seen) -> bool:
        """Two looks name the same item, and the same place where either was placed."""
        return last is not None and last[0] == seen[0] and (
            abs(last[1] - seen[1]) <= 1.5 or not (seen[2] or last[2]))

    def _ask(self, deb: Debouncer, item: dict, a: float, b: float, newest_time: float) -> list[RequestIntent]:
        """The index found `item` on air in [a, b): the song is asked about with that clip (the
        recognizer answers it from the index) unless it was, and answered so."""
        if not deb.requested:
            return deb.request_now(a, b, newest_time, "index_match")
        if not self._reasked and self._answered_otherwise(item):
            # the song was asked about, and its answer was something else (an item the provider did
            # not know, or a recording's tail, not shown: a clip that began on a jingle or on the
            # previous song run into this recording): the index knows what is on air now
            self._reasked = True
            return deb.request_now(a, b, newest_time, "index_match", again=True)
        return []

    def _answered_otherwise(self, found: dict) -> bool:
        try:
            play = self.index.store.play(self.play_id(self.song))
            answer = None if play is None else self.index.store.canonical(play[0])
        except IndexError_:
            return False
        return answer is not None and answer["id"] != found["id"]

    def _carry(self, new_start: float | None):
        """A boundary the debouncer found inside a recording the index says plays on (its predicted
        end well after it): the identification carries over, so that its end still starts a song."""
        if (new_start is None or self.song is None or self.current is None or self.predicted_end is None
                or self.predicted_end < new_start + 5.0):
            return None
        return self.current, self.matched, self.predicted_end, self._began

    def _from_answer(self, deb: Debouncer, newest_time: float) -> None:
        """The song's answer, once in: the recording it named, and where that began on air (the
        answer's offset into it, found on this play's own clip), predict its end, in place of what a
        check placed. A first play is in no index entry until it ends, and a recording that
        fingerprints weakly on this channel is matched now and then, sometimes a stretch off:
        without this, a song crossfaded into the next would hide that song until a re-query, or be
        cut where the checks last heard it. An answer naming a recording that has ended by now (the
        previous song's tail), or another one than the checks found, predicts nothing."""
        try:
            play = self.index.store.play(self.play_id(self.song))
            item = None if play is None else self.index.store.canonical(play[0])
        except IndexError_:
            return
        self._answer_read = play is not None
        if item is not None and item["kind"] == "unknown":
            deb.unknown = True
        if item is None or play[1] is None or item["kind"] != "recording" or not item.get("duration_s") or (
                self.current is not None and self.current["id"] != item["id"]):
            return
        began = self.song + float(play[1])
        end = began + float(item["duration_s"])
        if end <= newest_time:
            return
        self.current, self._began, self.predicted_end = item, began, end
        deb.identified = True
        log.debug("channel %s: answer %s began %.2f, ends %.2f", self.channel, item["id"], began, end)

    def _last_heard(self, a: float) -> float:
        """Where the identified recording was last heard (its last match, less half a window), or
        the window's start where it was only answered, never heard."""
        return a if self.matched is None else max(a, self.matched[3] - self.p.check_window_s / 2)

    def _ends_soon(self, b: float) -> bool:
        """The recording's predicted end is near: checks not finding it are more likely its audio
        fingerprinting weakly on this channel than the station leaving it early, and the end, where
        the next song starts, is known better from its duration than from where it was last heard."""
        return self.predicted_end is not None and self.predicted_end - b <= END_SOON_S

    def _should_match(self, b: float) -> bool:
        """Is the identified recording's audio at this point in the index (so no match means it ended)?"""
        if self.matched is None:
            return False
        _, t_end_s, at_end, when = self.matched
        return at_end + (b - when) + 1.0 < t_end_s

    def _change(self, deb: Debouncer, t: float, newest_time: float, reason: str) -> list[RequestIntent]:
        t = max(t, (self.song or t) + 1.0)
        log.debug("channel %s: %s at %.2f", self.channel, reason, t)
        self.metrics.identity_changes.labels(self.channel, reason).inc()
        self.close(deb, end=t)
        deb.new_song(t, newest_time, reason)
        self.song = deb.song_start
        return []

    def _collect(self, final: bool = False) -> None:
        """Anchors of the song's decided music not collected yet. Fingerprinted apart from the checks,
        in stretches that start on the song's whole "seconds" of peak picking (43 frames) with
        COLLECT_CONTEXT_S of audio before them: the anchors a fingerprint of the whole play would
        give. (Anchors cut from the checks' sliding windows, picked per window and second, kept
        about one in five of the hashes another channel's play of the recording gives.)"""
        lo = self._until if self._until is not None else self.song
        hi = min(self._decided, self._collect_until)
        if hi - lo < (0.5 if final else COLLECT_MIN_S):
            return
        k = max(0, int((lo - self.song - COLLECT_CONTEXT_S) // BUCKET_S))
        a, pcm = self.audio(self.song + k * BUCKET_S, hi + PAIR_SPAN_S)
        b = a + len(pcm) / SAMPLE_RATE
        hi = min(hi, b - PAIR_SPAN_S)
        if hi <= lo:
            return
        h, t = fingerprint(pcm, self.p.fp)
        abs_t = a + t * FRAME_S
        keep = (abs_t >= lo) & (abs_t < hi)
        self._h.append(h[keep])
        self._t.append(np.round((abs_t[keep] - self.song) / FRAME_S).astype(np.int32))
        self._until = hi

    def close(self, deb: Debouncer | None = None, end: float | None = None) -> None:
        """The song ended: its fingerprints become the play's entry in the index."""
        asked = self.song is not None and (self._requested or (deb is not None and deb.requested))
        if asked:
            self._collect(final=True)
        if asked and self._h:
            h, t = np.concatenate(self._h), np.concatenate(self._t)
            seconds = ((end if end is not None else (self._until or self.song)) - self.song)
            # how long the song played: its anchors stop at its first gap, but a song that went
            # quiet for a moment and ended later (a gap too long) is still a song worth an entry
            played = seconds if end is not None else max(seconds, self._decided - self.song)
            if end is not None:
                keep = t < (end - self.song) / FRAME_S
                h, t = h[keep], t[keep]
            if played >= MIN_PLAY_S and len(h):
                self.index.add_play(self.channel, self.play_id(self.song), h, t, seconds)
        self.song = None
        self._reset()
