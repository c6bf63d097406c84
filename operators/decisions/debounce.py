"""Debounce: decided music frames -> at most one recognition request per song.

A song is a run of decided music frames, split where the music changes
inside a run. The change-point test compares the mean embedding of the W
frames before a candidate boundary with the W frames after it (cosine
distance, the "novelty"); a candidate needs a moderate novelty together with
a dip in level at that point (the fade or gap between two records). Novelty
alone (`novelty_high`, off by default) splits too many songs: intros, breaks
and texture changes inside a track move YAMNet's embedding as much as a new
record does, while a level dip is what a programme puts between records
(what each test buys in songs requested exactly once: docs/figures.md). Ambient
and through-composed music changes texture within a track, so a candidate is
kept only if the new material resembles no earlier part of the current song
(`max_self_similarity`, against up to `prototypes` (48) window means of the song),
and is placed at the local peak of the novelty. Last, the audio on both
sides must sound like two records (`operators.identity`): a break inside a
track keeps its harmony (chroma) and pulse (onset autocorrelation) while
YAMNet's embedding and the level say "new record"; when both correlate at
least `same_chroma` / `same_tempo` the candidate is dropped. A request opens
when the current song has lasted `min_music_s` up to the point where
boundaries are already known, so a jingle or sting shorter than that never
costs anything. After a request the song is not asked again unless the music
changes or `requery_after_s` passes; requests on a channel are at least
`cooldown_s` apart.

Non-music inside a run (a silence, a noise, or speech over music flagged by
the talk-over head) is a gap: shorter than `gap_keep_s` it keeps the song
open, and the first music frame after it counts as a level dip, since the
gap is exactly what sits between two records. Music shorter than
`min_music_s` before a gap (a jingle, a bed between two voice-overs) starts
no song: the run restarts after the gap, so the clip is cut from what follows.
The same holds for a level dip before the song has lasted `min_music_s` (a
jingle run straight into a record, with no gap the HMM would see): the song
starts at the dip.
"""
from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass

import numpy as np

from operators.audio.constants import HOP_S as FRAME_HOP_S
from operators.audio.constants import LEVEL_BLOCK, SAMPLE_RATE
from operators.audio.levels import block_levels_db
from operators.decisions.identity import compare
from operators.state import from_text, to_text

GAP_LEVEL_DB = -200.0    # level given to the first frame after a gap: a dip deeper than any threshold


# songs begun by the index (pipeline.identity.live) are asked about `index_start_wait_s` later, with
# the newest audio, where the level breaks there: stations put a jingle after a record's end, not
# inside a crossfade into the next one. A dip this long after such a start is the end of what
# aired there (a jingle is at least this long): the song that starts at it is a song like any other
INDEX_STARTS = ("predicted_end", "index_change")
BREAK_SEARCH_S, JINGLE_MIN_S = 2.5, 2.5
# music that resumes this soon after a song the provider did not know, and sounds like it (the
# cosine of its frames' mean with a window mean of that song), is that song after a quiet passage
# the music head did not call music (its tail would be paid as a new item: no play's entry reaches
# past such a gap). On the dev day a tail's first 3 s scored 0.72-0.80 against its song, the first
# 3 s of 40 other plays on the channel (songs, jingles, adverts) at most 0.69
RESUME_S, RESUME_SIMILARITY = 20.0, 0.7
# a request whose clip ended this long before it can go out (held back by the cooldown) is asked
# with the newest confirmed audio: the decisions' usual lag leaves up to 13.5 s between the two
STALE_CLIP_S = 15.0
# music under speech from two frames to 15 s, then clean music: a presenter talked over a song's
# intro (the ramp); an advert's voice runs over its bed for the whole spot. The talk-over head calls
# a frame or two of a spot clean now and then: clean music shorter than TALK_GAP_S does not end the
# stretch of talk
TALK_INTRO_MIN_S, TALK_INTRO_MAX_S, TALK_GAP_S = 1.5, 15.0, 2.5


@dataclass
class DebounceParams:
    min_music_s: float = 12.0
    clip_s: float = 10.0
    lead_in_s: float = 1.5
    requery_after_s: float = 240.0
    cooldown_s: float = 20.0
    window_frames: int = 6
    novelty_high: float = 2.0     # cosine distance is at most 2: never enough alone
    novelty_low: float = 0.25
    dip_db: float = 20.0
    max_self_similarity: float = 0.8
    peak_wait_frames: int = 2
    prototypes: int = 48
    gap_keep_s: float = 8.0
    same_chroma: float = 0.5      # a boundary whose two sides match in harmony and pulse is a break
    same_tempo: float = 0.5       # inside one record (operators.decisions.identity); either above 1 turns it off
    identity_before_s: float = 20.0
    identity_after_s: float = 10.0
    restart_on_early_dip: bool = True
    first_request_s: float = 0.0  # > 0: ask once the song has lasted this long to the newest audio,
                                  # before its boundaries are confirmed (the fingerprint index answers repeats)
    index_start_wait_s: float = 4.0
    talk_intro_s: float = 0.0     # > 0: a song whose intro is talked over is asked about once this much
                                  # clean music follows the talk, early like `first_request_s`

    @classmethod
    def from_config(cls, section: dict) -> "DebounceParams":
        """The debouncer's parameters among a `debounce` config section's keys (the others,
        such as history_s, are the channel's)."""
        return cls(**{k: v for k, v in section.items() if k in cls.__dataclass_fields__})


def history_needed_s(p: DebounceParams, lag_frames: int, delivery_s: float) -> float:
    """Seconds of audio the clip history must hold for the recording-identity test. It runs once a
    candidate boundary at t has `window_frames + peak_wait_frames` decided frames after it;
    decisions trail the newest audio by the HMM's lag and a frame, and audio arrives up to
    `delivery_s` at a time. By then it reads back to t - 1 - identity_before_s."""
    return (p.identity_before_s + 1.0 + delivery_s
            + FRAME_HOP_S * (p.window_frames + p.peak_wait_frames + 1 + lag_frames))


@dataclass
class RequestIntent:
    channel: str
    request_id: str
    clip_start: float
    clip_end: float
    emitted_at: float
    song_start: float
    reason: str            # new_music | talk_intro | song_change | requery | confirm | index_match | index_change
                           # | predicted_end
    seq: int = 0           # this song's n-th request, from 0


class Debouncer:
    """`audio(start, end)`, when given, returns the channel's float audio of that stretch (what
    is still held, possibly nothing): the recording-identity test needs it."""

    def __init__(self, channel: str, params: DebounceParams | None = None, audio=None):
        self.channel = channel
        self.p = params or DebounceParams()
        self.audio = audio
        # what the frames say, whatever the runs: the stretch of music under speech the newest
        # frame is in (or just after), and the clean music it is in
        self._talk_from = self._clean_since = None
        self._break = None            # (song start, does the level break there)
        self._last_run = None         # (end, window means, unknown) of the run of music before the last gap
        self._talk_since_music = False   # the talk-over head heard a voice since the last clean music frame
        self._after_talk = False         # ... before the open song began
        self.song_start = None
        self.reset_run()
        self.last_request_at = -1e12
        self.requests = 0
        self.same_recording_vetoes = 0

    def reset_run(self) -> None:
        if self.song_start is not None:
            means = list(self._protos) + ([_unit(np.mean([f[1] for f in self._frames], axis=0))] if self._frames else [])
            end = self._gap_since if self._gap_since is not None else (self._frames[-1][0] if self._frames else None)
            if means and end is not None:
                self._last_run = (end, means, self.unknown)
        self._start_song(None, "new_music")
        self._frames: deque = deque()        # (time, unit embedding, level_min_db, level_med_db)
        self._candidate = None               # (score, time, index-from-now)
        self._protos: list[np.ndarray] = []  # window means of this run of music, before the windows
        self._block: list[np.ndarray] = []
        self._gap_since = None               # start of a short non-music gap inside the run

    # -- per decided frame
    def push(self, time: float, music: bool, embedding: np.ndarray, level_min_db: float, level_med_db: float,
             newest_time: float, talk: bool = False, ahead_is_music: bool = True) -> list[RequestIntent]:
        """`ahead_is_music`: the frames after this one, not decided yet, all sound like music (the
        head's own scores): an early request (`first_request_s`) needs clean music up to the newest
        audio, so a jingle followed by talk is never asked about."""
        talk_from = self._talk_from
        self._follow_talk(time, music, talk)
        # speech over music (adverts, a presenter over a bed) is not a song to pay for: to the
        # debouncer it is a gap like any other non-music
        if not music or talk:
            self._talk_since_music = self._talk_since_music or talk
            # a short gap (a silence between records, a misclassified second) keeps the song open:
            # the change test across it decides whether the music after it is the same song
            if self.song_start is not None and time >= max(self.song_start, self._quiet_until):
                # (frames before the music the index opened a song on, ahead of the decisions, are
                # what preceded it: talk over its intro, speech before it)
                if self._gap_since is None:
                    self._gap_since = time
                elif time - self._gap_since > self.p.gap_keep_s:
                    self.reset_run()
            return []
        after_gap = self._gap_since is not None
        if after_gap and not self.requested and self._gap_since - self.song_start < self.p.min_music_s:
            # music too short to pay for, then a gap: a jingle, or a bed under talk; what follows
            # the gap is a run of its own, so the clip is not cut from the jingle
            self.reset_run()
        self._gap_since = None
        if after_gap and self._frames:
            level_min_db = GAP_LEVEL_DB     # the gap is the dip the change test looks for
        if self.song_start is None:
            self._after_talk = self._talk_since_music
            # clean music straight after a few seconds of music under speech: a presenter talked
            # over the song's intro; it is asked about sooner
            talked = self.p.talk_intro_s > 0 and talk_from is not None \
                and TALK_INTRO_MIN_S <= time - talk_from <= TALK_INTRO_MAX_S
            self.song_start, self.song_reason = time, "talk_intro" if talked else "new_music"
        self._talk_since_music = False
        e = np.asarray(embedding, np.float32)
        e = e / (np.linalg.norm(e) + 1e-9)
        self._frames.append((time, e, float(level_min_db), float(level_med_db)))
        self._detect_change(newest_time)
        self._restart_after_early_dip()
        return self._maybe_request(newest_time, ahead_is_music)

    def _follow_talk(self, time: float, music: bool, talk: bool) -> None:
        if not music:
            self._talk_from = self._clean_since = None
        elif talk:
            self._talk_from = time if self._talk_from is None else self._talk_from
            self._clean_since = None
        else:
            self._clean_since = time if self._clean_since is None else self._clean_since
            if time - self._clean_since >= TALK_GAP_S:
                self._talk_from = None

    def _restart_after_early_dip(self) -> None:
        # a dip before the song has lasted min_music_s: what came before it was a jingle or an ident
        # run into the song (or the fade of the last one); the song, and its clip, start at the dip.
        # Boundaries are accepted a few frames late, so the dip may already be among the frames held.
        if self.requested or self._candidate is not None or not self.p.restart_on_early_dip:
            return
        frames = list(self._frames)
        if len(frames) < 2 or frames[0][0] > self.song_start:
            return
        last = None
        for i in range(1, len(frames)):
            if frames[i][0] - self.song_start >= self.p.min_music_s:
                break
            if float(np.median([f[3] for f in frames[:i]])) - frames[i][2] >= self.p.dip_db:
                last = i
        if last is not None:
            for _ in range(last):
                self._frames.popleft()
            self._protos, self._block = [], []
            if self.song_reason in INDEX_STARTS and frames[last][0] - self.song_start >= JINGLE_MIN_S:
                self.song_reason = "new_music"
            self.song_start = frames[last][0]

    def _detect_change(self, newest_time: float) -> None:
        W = self.p.window_frames
        if len(self._frames) > 2 * W:
            self._remember(self._frames.popleft()[1])
        if self._candidate is not None:
            score, t, age = self._candidate
            self._candidate = (score, t, age + 1)
        if len(self._frames) == 2 * W:
            frames = list(self._frames)
            left = np.mean([f[1] for f in frames[:W]], axis=0)
            right = np.mean([f[1] for f in frames[W:]], axis=0)
            novelty = 1.0 - float(left @ right / (np.linalg.norm(left) * np.linalg.norm(right) + 1e-9))
            level = np.median([f[3] for f in frames])
            dip = level - min(frames[W - 1][2], frames[W][2])
            t = frames[W][0]
            # a song the provider did not know has no recording to carry it across a break inside it
            # (no predicted end, no check naming it past the stretch the index holds): each piece would
            # be paid as a new item, so new material must sound as unlike it as a resuming song's would
            most_alike = RESUME_SIMILARITY if self.unknown else self.p.max_self_similarity
            if (novelty >= self.p.novelty_high or (novelty >= self.p.novelty_low and dip >= self.p.dip_db)) \
                    and self._self_similarity(right) < most_alike:
                if self._candidate is None or novelty > self._candidate[0]:
                    self._candidate = (novelty, t, 0)
        if self._candidate is not None and self._candidate[2] >= self.p.peak_wait_frames:
            _, t, _ = self._candidate
            self._candidate = None
            if self._same_recording(t, newest_time):
                self.same_recording_vetoes += 1
                return
            # frames before the boundary belong to the old song
            while self._frames and self._frames[0][0] < t:
                self._frames.popleft()
            self._protos, self._block = [], []
            if t - self.song_start >= FRAME_HOP_S * self.p.window_frames:
                self._start_song(t, "song_change")

    def _same_recording(self, t: float, newest_time: float) -> bool:
        p = self.p
        if self.audio is None or p.same_chroma > 1 or p.same_tempo > 1:   # a correlation never exceeds 1
            return False
        # the second around the boundary is the fade or the break itself: neither side's
        before = self.audio(max(self.song_start, t - 1.0 - p.identity_before_s), t - 1.0)
        after = self.audio(t + 0.5, min(newest_time, t + 0.5 + p.identity_after_s))
        ident = compare(before, after)   # None when either side is too short to tell
        return ident is not None and ident.same_recording(p.same_chroma, p.same_tempo)

    def _resumes_unknown(self) -> bool:
        """Does this song resume, after a short gap, a song the provider did not know (RESUME_S)?"""
        last = self._last_run
        if last is None or not last[2] or not self._frames or self.song_start - last[0] > RESUME_S:
            return False
        if self._after_talk:
            # a voice between the two (a presenter, an advert): the programme moved on; a song that
            # merely went quiet for a while has none (day 3: two new songs after speech were held)
            return False
        return _max_cosine(last[1], np.mean([f[1] for f in self._frames], axis=0)) >= RESUME_SIMILARITY

    def _break_at_start(self) -> bool:
        """Does the level break (a gap, a dip of `dip_db`) within BREAK_SEARCH_S of the song's start?
        Without the audio to tell, it is taken to."""
        if self._break is not None and self._break[0] == self.song_start:
            return self._break[1]
        t = self.song_start
        x = None if self.audio is None else self.audio(t - BREAK_SEARCH_S, t + BREAK_SEARCH_S)
        if x is None or len(x) < 10 * LEVEL_BLOCK:
            return True
        found = bool(len(_breaks(_quiet(x, self.p.dip_db))))
        if len(x) >= 2 * BREAK_SEARCH_S * SAMPLE_RATE - LEVEL_BLOCK:
            self._break = (t, found)     # decided once the audio after the start is in
        return found

    def _early_audio(self, newest_time: float, first: float, breaks: bool) -> tuple[bool, float | None]:
        """May the song be asked about ahead of its confirmed boundaries, and from where? The
        decisions' frames trail the audio: where the newest audio is a gap (`dip_db` under the
        song's median level), what aired has ended (a jingle before speech). With `breaks` (not for
        a talked-over intro, asked from where the talk ended), where the level breaks (two blocks
        that deep) more than JINGLE_MIN_S into the song, what came before was a jingle or a sting
        run into the song: the clip starts after it, once `first` seconds of music follow."""
        x = None if self.audio is None else self.audio(self.song_start, newest_time)
        if x is None or len(x) < 10 * LEVEL_BLOCK:
            return True, None
        low = _quiet(x, self.p.dip_db)
        if low[-2:].any():
            return False, None
        if not breaks:
            return True, None
        skip = int(JINGLE_MIN_S * SAMPLE_RATE / LEVEL_BLOCK)
        pairs = _breaks(low[skip:])
        if not len(pairs):
            return True, None
        k = skip + int(pairs[-1]) + 1
        while k + 1 < len(low) and low[k + 1]:
            k += 1
        # the held audio ends at the newest time and may begin after the song's start
        after = newest_time - len(x) / SAMPLE_RATE + (k + 1) * LEVEL_BLOCK / SAMPLE_RATE
        return newest_time - after >= first, after

    def _remember(self, e: np.ndarray) -> None:
        # window means every W/2 frames (overlapping windows), like the windows they are compared with
        self._block.append(e)
        W = self.p.window_frames
        if len(self._block) < W:
            return
        m = np.mean(self._block, axis=0)
        self._protos.append(m / (np.linalg.norm(m) + 1e-9))
        self._block = self._block[1:]
        if len(self._protos) > self.p.prototypes:   # merge the two most alike: memory stays bounded
            P = np.stack(self._protos)
            sim = P @ P.T
            np.fill_diagonal(sim, -2)
            i, j = np.unravel_index(np.argmax(sim), sim.shape)
            merged = P[i] + P[j]
            self._protos = [p for k, p in enumerate(self._protos) if k not in (i, j)]
            self._protos.append(merged / (np.linalg.norm(merged) + 1e-9))

    def _self_similarity(self, right: np.ndarray) -> float:
        return _max_cosine(self._protos, right)

    @property
    def confirmed_time(self) -> float:
        """Stream time up to which song boundaries are known."""
        if not self._frames:
            return -1e12
        lag = (self.p.window_frames + self.p.peak_wait_frames) * FRAME_HOP_S
        return self._frames[-1][0] + FRAME_HOP_S - lag

    def _maybe_request(self, newest_time: float, ahead_is_music: bool = True) -> list[RequestIntent]:
        p = self.p
        conf = self.confirmed_time
        floor = self.song_start      # the clip starts no earlier
        if self._candidate is not None:
            conf = min(conf, self._candidate[1])
        if self.requested and self.early and not self.identified and conf - self.song_start >= p.min_music_s:
            # the early clip may have caught a jingle run into the song: once the song is confirmed,
            # ask again, unless the index has since identified it. The clip is the newest confirmed
            # audio: closer to what is on air as it is decided than the song's start (the song may
            # have ended since), and overlapping the early clip, which the index holds (free then)
            self.early = False
            if self.song_reason == "talk_intro" and self.unknown:
                # asked from where the talk ended, on clean music with no jingle in the clip: "not
                # known" there is the provider not knowing the song (on the airplay days a confirm
                # after one never named a song, and each was a second paid call for the item)
                return []
            reason, start = "confirm", max(self.song_start, conf - p.clip_s)
        elif self.requested:
            if self.last_clip_start is None or conf - self.last_clip_start < p.requery_after_s:
                return []
            reason, start = "requery", max(self.song_start, min(conf, newest_time) - p.clip_s)
        else:
            wait = p.index_start_wait_s if self.song_reason in INDEX_STARTS and self._break_at_start() else 0.0
            intro = self.song_reason == "talk_intro"
            first = p.talk_intro_s if intro else p.first_request_s
            early = first > 0 and not self.hold and ahead_is_music and newest_time - self.song_start >= first + wait
            after = None
            if early:
                early, after = self._early_audio(newest_time, first, breaks=not intro)
            if conf - self.song_start < p.min_music_s and not early:
                return []
            if self._resumes_unknown():
                # the unknown song again, after a quiet passage: not asked early (it was asked about,
                # in its first part), and it holds the channel's pacing as that question would have
                # (what follows, often a jingle run into the next song, is not asked early with the
                # jingle in its clip). Once confirmed it is asked like any song
                if not self.resumed:
                    self.resumed, self.last_request_at = True, newest_time
                if conf - self.song_start < p.min_music_s:
                    return []
            # a talked-over song is well under way when the talk ends: no fade-in to skip
            reason, start = self.song_reason, self.song_start + (0.0 if intro else p.lead_in_s)
            if after is not None and early:
                start = floor = max(start, after)
            if wait:
                # the song began where the index last heard the recording before it; a jingle or a
                # sting often airs there: the clip is the newest audio, after it
                start = max(start, (newest_time if early else conf) - p.clip_s)
            # asked before min_music_s: a confirm request follows unless the index identifies the song
            self.early = early and conf - self.song_start < p.min_music_s
            if self.hold and self.heard is not None:
                # the index knows this song as an item the provider did not, from the audio it heard:
                # that is the clip that the recognizer answers for free (an earlier play's entry may not
                # reach back to this one's start)
                start, end = self.heard
                return [] if end - start < min(3.0, p.clip_s) else [self._intent(start, end, newest_time, reason)]
        end = start + p.clip_s
        if end > newest_time:
            end = newest_time
            start = max(floor, end - p.clip_s)
        if end - start < min(3.0, p.clip_s) or (newest_time - self.last_request_at < p.cooldown_s
                                                 and reason != "confirm"):
            return []
        if newest_time - end > STALE_CLIP_S:
            # held back (the channel's cooldown) until its clip is old news: the song may have ended
            # since, and an answer is shown when it is decided. The newest confirmed audio is asked
            # about instead: an answer for a recording that has ended by now is then not shown
            start = max(self.song_start, min(conf, newest_time) - p.clip_s)
            end = start + p.clip_s
        return [self._intent(start, end, newest_time, reason)]

    def _intent(self, start: float, end: float, newest_time: float, reason: str) -> RequestIntent:
        intent = RequestIntent(self.channel, f"{self.channel}:{self.song_start:.2f}:{self.song_requests}",
                               round(start, 3), round(end, 3), round(newest_time, 3), round(self.song_start, 3),
                               reason, self.song_requests)
        self.requested = True
        self.song_requests += 1
        self.requests += 1
        self.last_clip_start = start
        self.last_request_at = newest_time
        return intent

    # -- what the fingerprint index says (pipeline.identity.live)
    def request_now(self, start: float, end: float, newest_time: float, reason: str,
                    again: bool = False) -> list[RequestIntent]:
        """The index knows the recording in [start, end) (the audio it checked): ask at once with
        that clip (answered locally), whatever the timers say; once per song, unless `again` (the
        song's answer named something else)."""
        if self.song_start is None or (self.requested and not again):
            return []
        start = max(self.song_start, start)
        if end - start < min(3.0, self.p.clip_s):
            return []
        return [self._intent(start, end, newest_time, reason)]

    @property
    def talk_from(self) -> float | None:
        """Where the stretch of music under speech that the newest decided frame is in began."""
        return self._talk_from

    @property
    def between_songs(self) -> bool:
        """No song is open, or the open one is in a gap (its music may be over)."""
        return self.song_start is None or self._gap_since is not None

    def open_song(self, t: float, reason: str, music_from: float) -> None:
        """A song the index found at stream time t, ahead of the decisions, in clean music from
        `music_from` (its intro talked over, or speech before it): whatever was open ends, and the
        song starts at t, not asked about yet; what the frames before `music_from` say is no gap in it."""
        self.reset_run()
        self._start_song(t, reason)
        self._quiet_until = music_from

    def new_song(self, t: float, newest_time: float, reason: str) -> None:
        """A song boundary the index found at stream time t (the recording on air changed, or the
        one identified has ended): the song, and its clip, start there."""
        if self.song_start is None or t <= self.song_start:
            return
        while self._frames and self._frames[0][0] < t:
            self._frames.popleft()
        self._protos, self._block, self._candidate = [], [], None
        self._start_song(t, reason)

    def _start_song(self, t: float | None, reason: str) -> None:
        """A new song at t (None: none open yet): nothing asked about it."""
        self.song_start, self.song_reason = t, reason
        self.requested, self.song_requests, self.last_clip_start = False, 0, None
        self.hold = False         # the index knows it as something the provider did not: no early ask
        self.heard = None         # ... and heard it in this stretch (start, end): the clip asked with
        self.unknown = False      # the index or the provider knows it as an item the provider did not know
        self.resumed = False      # it resumes the unknown song before the last gap (_resumes_unknown)
        self.early = False        # asked early (before min_music_s): asked again then, unless identified
        self.identified = False   # the index has identified it (pipeline.identity.live)
        self._quiet_until = -1e12  # opened by the index ahead of the decisions: no gap before this

    def snapshot(self) -> dict:
        return {"params": asdict(self.p), "song_start": self.song_start, "song_reason": self.song_reason,
                "requested": self.requested, "song_requests": self.song_requests, "hold": self.hold,
                "heard": self.heard, "unknown": self.unknown, "resumed": self.resumed,
                "last_run": None if self._last_run is None else [self._last_run[0], [to_text(m) for m in self._last_run[1]],
                                                                 self._last_run[2]],
                "early": self.early, "identified": self.identified, "quiet_until": self._quiet_until,
                "talk_since_music": self._talk_since_music, "after_talk": self._after_talk,
                "last_clip_start": self.last_clip_start, "last_request_at": self.last_request_at,
                "requests": self.requests, "same_recording_vetoes": self.same_recording_vetoes,
                "candidate": self._candidate, "_gap_since": self._gap_since, "_talk_from": self._talk_from,
                "_clean_since": self._clean_since,
                "frames": [(t, to_text(e), lo, med) for t, e, lo, med in self._frames],
                "protos": [to_text(e) for e in self._protos], "block": [to_text(e) for e in self._block]}

    def restore(self, d: dict) -> None:
        for k in ("song_start", "song_reason", "requested", "song_requests", "last_clip_start", "last_request_at",
                  "requests", "_gap_since"):
            setattr(self, k, d[k])
        self.same_recording_vetoes = d.get("same_recording_vetoes", 0)   # absent from older snapshots
        self.hold = d.get("hold", False)
        self.heard = tuple(d["heard"]) if d.get("heard") else None
        self.unknown, self.resumed = d.get("unknown", False), d.get("resumed", False)
        last = d.get("last_run")
        self._last_run = None if not last else (last[0], [from_text(m) for m in last[1]], last[2])
        self._talk_from, self._clean_since = d.get("_talk_from"), d.get("_clean_since")
        self.early, self.identified = d.get("early", False), d.get("identified", False)
        self._quiet_until = d.get("quiet_until", -1e12)
        self._talk_since_music, self._after_talk = d.get("talk_since_music", False), d.get("after_talk", False)
        self._candidate = tuple(d["candidate"]) if d["candidate"] else None
        self._frames = deque((t, from_text(e), lo, med) for t, e, lo, med in d["frames"])
        self._protos = [from_text(e) for e in d["protos"]]
        self._block = [from_text(e) for e in d["block"]]


def _quiet(x: np.ndarray, dip_db: float) -> np.ndarray:
    """Which 0.1 s blocks of the audio `x` lie `dip_db` or more under its median level."""
    db = block_levels_db(np.asarray(x, np.float64))
    return db <= np.median(db) - dip_db


def _breaks(quiet: np.ndarray) -> np.ndarray:
    """Where the level breaks: the first of each two quiet blocks in a row. Percussive music dips
    that deep for a single 0.1 s block now and then (a crossfade on the dev day: one block at most;
    the gap before a jingle: three or more)."""
    return np.flatnonzero(quiet[1:] & quiet[:-1])


def _unit(v: np.ndarray) -> np.ndarray:
    return v / (np.linalg.norm(v) + 1e-9)


def _max_cosine(unit_means: list[np.ndarray], v: np.ndarray) -> float:
    """The largest cosine of `v` with window means already of unit length; -1 with none."""
    return float(np.max(np.stack(unit_means) @ _unit(v))) if unit_means else -1.0
