"""Recognition: provider adapters and the stage that pays for requests.

A provider is one class with `identify(audio, codec) -> Answer`; ACRCloud
(identify v1: multipart, HMAC-SHA1 signature) and AudD (multipart with
api_token) ship here, and `PROVIDERS` maps config names to classes. The
Recognizer around it never pays twice for one request id (result cache),
enforces the budget before a call, rate-limits per provider, retries 5xx and
timeouts with exponential backoff, honours 429 Retry-After, and writes every
outcome to the cost ledger (paid calls with their cost).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import math
import threading
import time
from dataclasses import dataclass, field

import requests

from operators.audio.clip import decode_clip
from operators.tagging.provider_genres import provider_tags
from operators.utc import iso
from pipeline.metrics import Metrics

log = logging.getLogger("onair.recognize")
ENDING_S = 5.0       # an answer for a recording ending this soon after its request was decided is not shown
TAIL_S = 20.0        # nor one for a recording's last seconds found at a song's start
TAIL_MIN_DURATION_S = 90.0   # ... of a recording longer than this
NOT_SHOWN = "the recording ends within seconds of the request, or it is the tail of one at a song's start: not shown"


@dataclass
class Answer:
    matched: bool
    title: str | None = None
    artist: str | None = None
    album: str | None = None
    isrc: str | None = None
    score: float | None = None
    extra: dict = field(default_factory=dict)
    genres: list = field(default_factory=list)   # the provider's genre names, as given


class ProviderError(Exception):
    def __init__(self, message: str, retryable: bool, retry_after: float | None = None, status: int | None = None,
                 billed: bool = False):
        super().__init__(message)
        self.retryable, self.retry_after, self.status = retryable, retry_after, status
        self.billed = billed       # the provider answered 200: the call may be billed, so never retried


def billed_error(message: str) -> ProviderError:
    """An HTTP 200 whose body onair cannot use (not JSON, not the documented shape): the provider
    may have billed it, so it is ledgered as paid and never retried."""
    return ProviderError(f"HTTP 200 with an unusable answer: {message}", retryable=False, status=200, billed=True)


class BadRequest(ValueError):
    """A request record onair cannot send: a missing or malformed field."""


class Provider:
    name = "base"

    def __init__(self, price: float, timeout_s: float = 10.0):
        self.price = price
        self.timeout_s = timeout_s
        self.session = requests.Session()

    def identify(self, audio: bytes, codec: str) -> Answer:
        raise NotImplementedError

    def _post(self, url: str, data: dict, files: dict) -> dict:
        try:
            r = self.session.post(url, data=data, files=files, timeout=self.timeout_s)
        except requests.Timeout:
            raise ProviderError("timed out", retryable=True) from None
        except requests.ConnectionError as e:
            raise ProviderError(f"connection failed: {type(e).__name__}", retryable=True) from None
        if r.status_code == 429:
            raise ProviderError("rate limited (429)", True, _retry_after(r.headers.get("Retry-After")), 429)
        if r.status_code >= 500:
            raise ProviderError(f"server error {r.status_code}", True, _retry_after(r.headers.get("Retry-After")),
                                r.status_code)
        if r.status_code >= 400:
            raise ProviderError(f"client error {r.status_code}", False, status=r.status_code)
        try:
            doc = r.json()
        except (ValueError, RecursionError):
            raise billed_error("not JSON") from None
        if not isinstance(doc, dict):
            raise billed_error(f"JSON of the wrong shape ({type(doc).__name__})")
        return doc


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class ACRCloud(Provider):
    """ACRCloud identify v1 (https://docs.acrcloud.com/reference/identification-api)."""
    name = "acrcloud"

    def __init__(self, url: str, access_key: str, access_secret: str, price: float, timeout_s: float = 10.0):
        super().__init__(price, timeout_s)
        self.url, self.access_key, self._secret = url, access_key, access_secret

    @staticmethod
    def signature(secret: str, uri: str, access_key: str, data_type: str, version: str, timestamp: str) -> str:
        msg = "\n".join(["POST", uri, access_key, data_type, version, timestamp])
        return base64.b64encode(hmac.new(secret.encode(), msg.encode(), hashlib.sha1).digest()).decode()

    def identify(self, audio: bytes, codec: str) -> Answer:
        from urllib.parse import urlparse
        ts = str(int(time.time()))
        sig = self.signature(self._secret, urlparse(self.url).path, self.access_key, "audio", "1", ts)
        data = {"access_key": self.access_key, "sample_bytes": str(len(audio)), "timestamp": ts,
                "signature": sig, "data_type": "audio", "signature_version": "1"}
        doc = self._post(self.url, data, {"sample": (f"clip.{codec}", audio, f"audio/{codec}")})
        status = doc.get("status")
        code = status.get("code") if isinstance(status, dict) else None
        if isinstance(code, bool) or not isinstance(code, int):
            raise billed_error("ACRCloud answer without a status code")
        if code == 0:
            found = _list(_dict(doc.get("metadata")).get("music"))
            music = _dict(found[0]) if found else {}
            if not music:
                raise billed_error("ACRCloud status 0 without a music entry")
            artists = ", ".join(_text(_dict(a).get("name")) or "" for a in _list(music.get("artists"))) or None
            return Answer(True, _text(music.get("title")), artists, _text(_dict(music.get("album")).get("name")),
                          _text(_dict(music.get("external_ids")).get("isrc")), _num(music.get("score")),
                          {"acrid": music.get("acrid"), "duration_ms": _num(music.get("duration_ms")),
                           "play_offset_ms": _num(music.get("play_offset_ms")),
                           "sample_begin_ms": _num(music.get("sample_begin_time_offset_ms")),
                           "sample_end_ms": _num(music.get("sample_end_time_offset_ms"))},
                          _names(_dict(g).get("name") for g in _list(music.get("genres"))))
        if code == 1001:
            return Answer(False)
        msg = _text(status.get("msg")) or ""
        # ACRCloud's documented errors are not billed. 3003/3015: limits exceeded (retried);
        # 2000/3xxx others are configuration faults
        raise ProviderError(f"ACRCloud status {code}: {msg}", retryable=code in (3003, 3015), status=200)


class AudD(Provider):
    """AudD (https://docs.audd.io/): multipart with api_token."""
    name = "audd"

    def __init__(self, url: str, api_token: str, price: float, timeout_s: float = 10.0):
        super().__init__(price, timeout_s)
        self.url, self._token = url, api_token

    def identify(self, audio: bytes, codec: str) -> Answer:
        # AudD has no "isrc" value for `return`: the ISRC comes inside the Apple Music and Spotify
        # metadata, which this asks for
        doc = self._post(self.url, {"api_token": self._token, "return": "apple_music,spotify"},
                         {"file": (f"clip.{codec}", audio, f"audio/{codec}")})
        if doc.get("status") == "success":
            res = doc.get("result")
            if not res:
                return Answer(False)
            if not isinstance(res, dict):
                raise billed_error(f"AudD result of the wrong shape: {type(res).__name__}")
            return Answer(True, _text(res.get("title")), _text(res.get("artist")), _text(res.get("album")),
                          _audd_isrc(res), None,
                          {"timecode": _text(res.get("timecode")), "song_link": _text(res.get("song_link")),
                           "play_offset_ms": _timecode_ms(res.get("timecode"))},
                          _names(_list(_dict(res.get("apple_music")).get("genreNames"))))
        err = doc.get("error")
        if doc.get("status") != "error" or not isinstance(err, dict):
            raise billed_error("AudD answer that is neither success nor error")
        code = err.get("error_code")
        # AudD's documented errors are not billed. 901/902: request limits (retried);
        # 900/300/500: token or request faults
        raise ProviderError(f"AudD error {code}: {_text(err.get('error_message')) or ''}",
                            retryable=code in (901, 902), status=200)


def _names(values) -> list[str]:
    """Genre names as given: strings only, each once, in the provider's order."""
    out: list[str] = []
    for v in values:
        t = _text(v)
        if t and t not in out:
            out.append(t)
    return out


def _audd_isrc(res: dict) -> str | None:
    return (_text(_dict(res.get("apple_music")).get("isrc"))
            or _text(_dict(_dict(res.get("spotify")).get("external_ids")).get("isrc")))


def _dict(v) -> dict:
    return v if isinstance(v, dict) else {}


def _list(v) -> list:
    return v if isinstance(v, list) else []


def _text(v) -> str | None:
    """A provider's string field; numbers are taken as text, anything else as absent."""
    if isinstance(v, str):
        return v
    return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _timecode_ms(v) -> float | None:
    """AudD's `timecode` ("mm:ss", where in the song the clip was found) in milliseconds."""
    try:
        m, sec = str(v).split(":")
        return (int(m) * 60 + float(sec)) * 1000.0
    except (TypeError, ValueError):
        return None


def _num(v):
    try:
        return float(v) if v is not None else None
    except (TypeError, ValueError):
        return None


PROVIDERS = {"acrcloud": ACRCloud, "audd": AudD}


def _finite(v) -> bool:
    """A JSON number that is a number: not a boolean, not NaN or infinite."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def ledger_problem(e: dict) -> str | None:
    """What makes a ledger line unusable for the budget and the cache, or None."""
    for key in ("request_id", "channel", "outcome"):
        if not isinstance(e.get(key), str):
            return f"field {key!r} missing or not a string"
    if not isinstance(e.get("paid", False), bool):
        return "field 'paid' not true or false"
    for key in ("ts", "cost") if e.get("paid") else ():
        if not _finite(e.get(key)):
            return f"field {key!r} missing or not a finite number"
    if e.get("nowplaying") is not None and not isinstance(e["nowplaying"], dict):
        return "field 'nowplaying' not an object"
    return None


def request_audio(req) -> bytes:
    """The clip of a request record, its fields checked; BadRequest names what is wrong."""
    if not isinstance(req, dict):
        raise BadRequest("not a JSON object")
    for key in ("request_id", "channel"):
        if not isinstance(req.get(key), str) or not req[key]:
            raise BadRequest(f"field {key!r} missing or not a string")
    for key in ("clip_start", "clip_end", "song_start", "emitted_at"):
        if not _finite(req.get(key)) and not (key in ("song_start", "emitted_at") and req.get(key) is None):
            raise BadRequest(f"field {key!r} missing or not a finite number")
    if req["clip_end"] < req["clip_start"]:
        raise BadRequest("field 'clip_end' before 'clip_start'")
    audio = req.get("audio")
    if not isinstance(audio, dict) or not isinstance(audio.get("data"), str) or not isinstance(audio.get("codec"), str):
        raise BadRequest("field 'audio' missing, or without 'data' and 'codec' strings")
    try:
        return base64.b64decode(audio["data"], validate=True)
    except ValueError as e:
        raise BadRequest(f"field 'audio.data' is not base64 ({e})") from None


def play_of(request_id: str) -> str:
    """The play (`channel:song_start_utc`) a request id (`...:n`) belongs to."""
    return request_id.rsplit(":", 1)[0]


def _clip_in_play(req: dict) -> float | None:
    try:
        return float(req["clip_end"]) - float(req["song_start"])
    except (KeyError, TypeError, ValueError):
        return None


def ms_to_s(ms) -> float | None:
    """A provider's milliseconds in seconds; None when absent or not a number."""
    v = _num(ms)
    return None if v is None else v / 1000.0



class RateLimiter:
    """At most `rate` calls per second, with a burst of one second's worth."""

    def __init__(self, rate: float):
        self.rate = rate
        self._tokens = max(1.0, rate)
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                self._tokens = min(max(1.0, self.rate), self._tokens + (now - self._last) * self.rate)
                self._last = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                wait = (1.0 - self._tokens) / self.rate
            time.sleep(wait)


class Recognizer:
    def __init__(self, provider: Provider, budget, ledger, currency: str = "USD", max_retries: int = 4,
                 backoff_s: float = 0.5, rate_per_s: float = 5.0, metrics=None, clock=time.time, index=None):
        self.provider = provider
        self.budget = budget
        self.ledger = ledger          # callable(entry dict)
        self.currency = currency
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.limiter = RateLimiter(rate_per_s)
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.cache: dict[str, dict] = {}      # request_id -> {"outcome", "nowplaying", "clip_sha1"}
        self._lock = threading.Lock()
        self.index = index                    # pipeline.identity.AudioIndex, or None
        self.corrections: list[dict] = []     # airplay corrections not yet written (take_corrections)
        self.plays: dict[str, dict] = {}      # play id -> the now-playing record identifying it

    def replay(self, entries) -> None:
        """Rebuild the cache and the budget from an earlier ledger (restart, failover)."""
        for e in entries:
            if e.get("paid"):
                self.budget.charge(e["channel"], e["cost"], at=e["ts"])
            # answered, or settled: a request billed for an unusable answer is not paid again, and one
            # the budget skipped is not ledgered again
            if e.get("outcome") in ("matched", "no_match", "local_match", "known_unidentified", "budget_skipped") \
                    or (e.get("outcome") == "error" and e.get("paid")):
                self.cache[e["request_id"]] = {"outcome": e["outcome"], "nowplaying": e.get("nowplaying"),
                                               "clip_sha1": e.get("clip_sha1")}

    def handle(self, req: dict) -> dict | None:
        """Recognise one request; returns a now-playing record when the provider matched it.
        BadRequest for a record that cannot be a request (the caller names and parks it)."""
        audio = request_audio(req)
        rid, channel = req["request_id"], req["channel"]
        sha1 = hashlib.sha1(audio).hexdigest()
        with self._lock:
            hit = self.cache.get(rid)
        if hit is not None:
            # a copy of a request already answered (a replay after failover, a restart) has the same
            # clip; another clip under the same id is another song and must never get its answer
            if hit.get("clip_sha1") in (None, sha1):
                self._count(channel, "deduplicated")
                return hit["nowplaying"]
            log.warning("channel %s: request id %s came again with other audio; not answered from the cache",
                        channel, rid)
        same = self._same_play(req, sha1)
        if same is not None:
            return same
        pcm, local = self._local(req, audio)
        if local is not None and local.outcome != "stale_unknown":
            return self._answered_locally(req, local, sha1)
        price = self.provider.price
        with self._lock:
            cap = self.budget.check(channel, price)
            if cap is None:
                self.budget.charge(channel, price)   # reserved now, so a burst cannot overshoot the cap
        if cap is not None:
            self._count(channel, "budget_skipped")
            self._ledger(req, "budget_skipped", paid=False, detail=cap)
            log.info("channel %s: request %s not sent: budget cap %s reached", channel, rid, cap)
            return None
        answer, error, billed = self._call(audio, req["audio"]["codec"], channel)
        if answer is None:
            if billed:      # an unusable 200: paid for all the same, and cached, so never sent again
                with self._lock:
                    self.cache[rid] = {"outcome": "error", "nowplaying": None, "clip_sha1": sha1}
                self._ledger(req, "error", paid=True, detail=error, clip_sha1=sha1)
                self._paid(req, channel, price)
            else:
                with self._lock:
                    self.budget.refund(channel, price)   # nothing was paid: give the reservation back
                self._ledger(req, "error", paid=False, detail=error)
            self._count(channel, "error")
            return None
        outcome = "matched" if answer.matched else "no_match"
        label = None if not answer.matched else {
            "title": answer.title, "artist": answer.artist, "album": answer.album, "isrc": answer.isrc,
            "provider": self.provider.name, "score": answer.score, "genres": answer.genres}
        nowplaying = None if label is None else self._nowplaying(
            req, label, "provider", ms_to_s(answer.extra.get("play_offset_ms")), ms_to_s(answer.extra.get("duration_ms")))
        detail = ""
        if self._ended(req, nowplaying):
            nowplaying, detail = None, NOT_SHOWN
        # the billed call is on the ledger (and cached) before anything else can fail
        with self._lock:
            self.cache[rid] = {"outcome": outcome, "nowplaying": nowplaying, "clip_sha1": sha1}
        self._ledger(req, outcome, paid=True, nowplaying=nowplaying, clip_sha1=sha1, detail=detail)
        self._count(channel, outcome)
        self._paid(req, channel, price)
        self._remember_play(req, nowplaying)
        if self.index is not None and pcm is not None:
            try:
                stale = local.item if local is not None else None
                item = self.index.learn(channel, pcm, None if label is None else {**label, "extra": answer.extra},
                                        play_of(rid), stale=stale, clip_in_play_s=_clip_in_play(req))
                if stale is not None and label is not None and item is not None:
                    self._correct_earlier(req, item, label)
            except Exception as e:     # the index learns nothing from this answer; the answer stands
                log.warning("channel %s: request %s: the fingerprint index could not learn the answer: %s: %s",
                            channel, rid, type(e).__name__, e)
        return nowplaying

    def _paid(self, req: dict, channel: str, price: float) -> None:
        self._count(channel, "sent")
        self.metrics.recognition_spend.labels(channel, self.provider.name).inc(price)
        self.metrics.recognition_audio.labels(channel, self.provider.name).inc(
            float(req["clip_end"]) - float(req["clip_start"]))

    def _same_play(self, req: dict, sha1: str) -> dict | None:
        """A later request of a play already identified, whose clip ends before that recording's
        predicted end (the provider's duration and offset): the same recording, answered free."""
        if self.index is None:
            return None
        known = self.plays.get(play_of(req["request_id"]))
        if known is None or float(req["clip_end"]) > known["ends_at"] - 2.0:
            return None
        nowplaying = {**known, "request_id": req["request_id"], "identified_by": "same_play"}
        return self._free(req, "local_match", nowplaying, sha1,
                          f"the recording identified for this play runs until stream time {known['ends_at']}")

    def _free(self, req: dict, outcome: str, nowplaying: dict | None, sha1: str, detail: str = "",
              match: dict | None = None) -> dict | None:
        """An answer that cost nothing: cached, counted, its price counted as saved, ledgered unpaid."""
        with self._lock:
            self.cache[req["request_id"]] = {"outcome": outcome, "nowplaying": nowplaying, "clip_sha1": sha1}
        self._count(req["channel"], outcome)
        self.metrics.recognition_saved.labels(req["channel"], self.provider.name).inc(self.provider.price)
        self._ledger(req, outcome, paid=False, nowplaying=nowplaying, clip_sha1=sha1, detail=detail, match=match)
        return nowplaying

    def _remember_play(self, req: dict, nowplaying: dict | None) -> None:
        if nowplaying is not None and "ends_at" in nowplaying:
            self.plays[play_of(req["request_id"])] = nowplaying
            while len(self.plays) > 10000:        # the newest plays are the ones asked about again
                self.plays.pop(next(iter(self.plays)))

    def _local(self, req: dict, audio: bytes):
        """(decoded clip, LocalAnswer or None): what the fingerprint index says of the clip."""
        if self.index is None:
            return None, None
        try:
            pcm = decode_clip(audio)
        except Exception as e:   # the provider gets the clip as before; it may still read it
            log.warning("channel %s: request %s: clip unreadable for the fingerprint index (%s); sent as is",
                        req["channel"], req["request_id"], e)
            return None, None
        return pcm, self.index.answer(pcm, req["channel"], play_of(req["request_id"]), _clip_in_play(req))

    def _answered_locally(self, req: dict, local, sha1: str) -> dict | None:
        m = local.match
        nowplaying = None
        if local.outcome == "local_match":
            label = local.item.get("answer") or {}
            nowplaying = self._nowplaying(req, label, "local_index", local.position_s, local.item.get("duration_s"))
        detail = ""
        if self._ended(req, nowplaying):
            nowplaying, detail = None, NOT_SHOWN
        self._remember_play(req, nowplaying)
        return self._free(req, local.outcome, nowplaying, sha1, detail,
                          {"item": local.item["id"], "aligned": m.aligned, "coverage": m.coverage,
                           "item_offset_s": round(m.offset_s, 2), "position_s": local.position_s})

    def _nowplaying(self, req: dict, label: dict, by: str, position_s=None, duration_s=None) -> dict:
        rec = {"channel": req["channel"], "request_id": req["request_id"], "title": label.get("title"),
               "artist": label.get("artist"), "album": label.get("album"), "isrc": label.get("isrc"),
               "provider": label.get("provider") or self.provider.name, "score": label.get("score"),
               "started_at": req.get("song_start", req["clip_start"]),
               "started_at_utc": req.get("song_start_utc", req.get("clip_start_utc")), "clock": req.get("clock"),
               "identified_by": by, "genres": provider_tags(label),
               # how the music is used where it was asked about (foreground, or a bed under speech)
               "usage": req.get("usage"), "usage_confidence": req.get("usage_confidence")}
        if position_s is not None:
            rec["position_s"] = round(float(position_s), 2)    # in the recording, at the clip's end
        if duration_s is not None:
            rec["duration_s"] = round(float(duration_s), 2)
        if position_s is not None and duration_s is not None:
            # the recording's end in stream time: an answer for a recording that ended before the
            # request was decided (a clip cut from the fade, the next song already on) is not shown
            rec["ends_at"] = round(float(req["clip_end"]) + float(duration_s) - float(position_s), 3)
        return rec

    @staticmethod
    def _ended(req: dict, rec: dict | None) -> bool:
        """Not worth showing: the recording ends within ENDING_S of the request (its fade), or a
        song's first seconds are a recording's last TAIL_S (a sting or jingle cut from its end)."""
        if rec is None or "ends_at" not in rec:
            return False
        if rec["ends_at"] < float(req.get("emitted_at", 0.0)) + ENDING_S:
            return True
        # (short recordings are left out: a track that loops has its position known only to a loop)
        at_start = _clip_in_play(req) is not None and _clip_in_play(req) <= 30.0
        return at_start and rec["duration_s"] > TAIL_MIN_DURATION_S and rec["duration_s"] - rec["position_s"] < TAIL_S

    def _correct_earlier(self, req: dict, item: int, label: dict) -> None:
        """An item the provider did not know is now identified: its earlier plays get a correction."""
        for play in self.index.earlier_plays(item):
            if play == play_of(req["request_id"]):
                continue
            channel, _, start_utc = play.partition(":")
            self.corrections.append({**{k: label.get(k) for k in ("title", "artist", "album", "isrc", "provider")},
                                     "channel": channel, "play_id": play, "started_at_utc": start_utc,
                                     "corrects": "unidentified", "identified_by_request": req["request_id"],
                                     "corrected_at_utc": iso(self.clock())})

    def take_corrections(self) -> list[dict]:
        with self._lock:
            out, self.corrections = self.corrections, []
        return out

    def _call(self, audio: bytes, codec: str, channel: str):
        """(answer or None, error, billed): retries 429, 5xx, timeouts and the provider's own
        limit errors; never a call that was answered 200 with an unusable body (billed)."""
        delay = self.backoff_s
        last = ""
        for attempt in range(self.max_retries + 1):
            self.limiter.acquire()
            t0 = time.monotonic()
            try:
                answer = self.provider.identify(audio, codec)
                self._latency(time.monotonic() - t0)
                return answer, "", False
            except ProviderError as e:
                self._latency(time.monotonic() - t0)
                last = str(e)
                if e.billed or not e.retryable or attempt == self.max_retries:
                    log.warning("channel %s: %s gave up: %s%s", channel, self.provider.name, last,
                                " (billed: not retried)" if e.billed else "")
                    return None, last, e.billed
                wait = e.retry_after if e.retry_after is not None else delay
                log.info("channel %s: %s %s; retry %d in %.1f s", channel, self.provider.name, last, attempt + 1,
                         wait)
                time.sleep(wait)
                delay *= 2
        return None, last, False

    def _ledger(self, req: dict, outcome: str, paid: bool, detail: str = "", nowplaying=None,
                clip_sha1: str | None = None, match: dict | None = None) -> None:
        entry = {"ts": round(self.clock(), 3), "request_id": req["request_id"], "channel": req["channel"],
                 "provider": self.provider.name, "outcome": outcome, "paid": paid,
                 "cost": self.provider.price if paid else 0.0, "currency": self.currency,
                 "audio_s": round(float(req["clip_end"]) - float(req["clip_start"]), 3)}
        if clip_sha1:
            entry["clip_sha1"] = clip_sha1
        if detail:
            entry["detail"] = detail
        if nowplaying is not None:
            entry["nowplaying"] = nowplaying
        if match is not None:
            entry["match"] = match
        self.ledger(entry)

    def _count(self, channel: str, outcome: str) -> None:
        self.metrics.recognition_requests.labels(channel, self.provider.name, outcome).inc()

    def _latency(self, seconds: float) -> None:
        self.metrics.provider_latency.labels(self.provider.name).observe(seconds)
