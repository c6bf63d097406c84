"""`onair overlay`: the now-playing card over HTTP.

Follows now-playing, genre and segment records (a direct-mode output folder's
JSONL files, or the Kafka topics) into `operators.recognition.nowplaying.NowPlayingBoard`
and serves:

- `/overlay/{channel}`: the card, a transparent HTML page for an OBS browser
  source or a CasparCG HTML template (pipeline/overlay/static/overlay.html);
- `/events/{channel}`: Server-Sent Events, one `state` event per change;
- `/api/channels`, `/api/nowplaying/{channel}`: the same state as JSON;
- `/healthz`: liveness, without a token (for probes).

Kafka mode uses no consumer group: every overlay instance must see every
record of every channel, and a group would split the partitions between
them. At start it reads back the last `overlay.replay_records` records of
each partition to rebuild the cards, and commits nothing.

Access: without a token it binds only loopback addresses (anything else is
refused at start); with a token (`overlay.token_env` / `overlay.token_file`)
every request but /healthz must carry it, as `?token=` (what an OBS URL and
EventSource can carry) or `Authorization: Bearer`. The token is never logged.
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from operators.recognition.nowplaying import BadRecord, NowPlayingBoard
from pipeline.config import ConfigError
from pipeline.follow import DailyTail
from pipeline.jsonin import BadLine, loads_record
from pipeline.metrics import Metrics
from pipeline.outputs import dumps
from pipeline.secrets import read_secret

log = logging.getLogger("onair.overlay")

PAGE = Path(__file__).resolve().parent / "static" / "overlay.html"
FILES = {"segment": "segments.jsonl", "genre": "genres.jsonl", "nowplaying": "nowplaying.jsonl"}
TICK_S = 0.2
INITIAL_SLOT = b'<script id="onair-initial" type="application/json">null</script>'


def script_json(obj) -> str:
    """JSON to put inside <script type="application/json">: no "<" at all, since "<!--" and
    "<script" in a title would change how the page's parser reads the rest of the element."""
    return dumps(obj).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def overlay_token(cfg: dict) -> str | None:
    return read_secret(cfg, "overlay", "token", required=False)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addrs = {ai[4][0] for ai in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addrs) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs)


def check_bind(host: str, token: str | None, token_env: str) -> None:
    if token is None and not is_loopback(host):
        raise ConfigError(f"config key 'overlay.host': {host} is reachable from other machines, and no token is set; "
                          f"set the variable {token_env} or overlay.token_file (or bind 127.0.0.1)")


class Hub:
    """The board behind one lock; each SSE connection waits on it for its channel's next change."""

    def __init__(self, board: NowPlayingBoard, metrics=None):
        self.board = board
        self.metrics = metrics or Metrics()
        self.cond = threading.Condition()
        self.closed = False

    def feed(self, kind: str, raw: str | bytes, where: str) -> bool:
        try:
            rec = loads_record(raw)
            with self.cond:
                self.board.apply(kind, rec)
                self.cond.notify_all()
        except (BadLine, BadRecord) as e:
            log.warning("%s: a %s record was skipped: %s", where, kind, e)
            self.metrics.overlay_bad_records.labels(kind, e.reason).inc()
            return False
        except Exception as e:     # a record the board cannot take must not stop the follower
            log.warning("%s: a %s record was skipped: %s: %s", where, kind, type(e).__name__, e)
            self.metrics.overlay_bad_records.labels(kind, "unreadable").inc()
            return False
        self.metrics.overlay_records.labels(kind).inc()
        return True

    def tick(self) -> None:
        with self.cond:
            if self.board.tick():
                self.cond.notify_all()

    def settle(self) -> None:
        with self.cond:
            self.board.settle()
            self.cond.notify_all()

    def channels(self) -> list[dict]:
        with self.cond:
            return [self.board.state(ch) for ch in self.board.channels()]

    def state(self, channel: str, default: bool = True) -> dict | None:
        with self.cond:
            s = self.board.state(channel)
        return NowPlayingBoard.empty_state(channel) if s is None and default else s

    def wait_change(self, channel: str, seq: int, timeout: float) -> dict:
        """The channel's state once it differs from `seq`, or as it is after `timeout` s."""
        def changed():
            s = self.board.state(channel)
            return self.closed or (s is not None and s["seq"] != seq)
        with self.cond:
            self.cond.wait_for(changed, timeout)
            s = self.board.state(channel)
        return NowPlayingBoard.empty_state(channel) if s is None else s

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


class DirFollower(threading.Thread):
    """DIR's nowplaying, genres and segments records, followed as they grow, across the daily
    rotation (pipeline.follow.DailyTail)."""

    def __init__(self, hub: Hub, directory: Path, stop: threading.Event):
        super().__init__(name="overlay-dir", daemon=True)
        self.hub, self.stop = hub, stop
        self.dir = Path(directory)
        self.tails = {kind: DailyTail(self.dir, name.removesuffix(".jsonl")) for kind, name in FILES.items()}

    def read_all(self) -> int:
        n = 0
        for kind, tail in self.tails.items():
            for path, line_no, line in tail.read_numbered():
                self.hub.feed(kind, line, f"{path}:{line_no}")
                n += 1
        return n

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                if not self.read_all():
                    self.stop.wait(TICK_S)
            except OSError as e:      # a folder on a flaky mount: say so, keep trying
                log.warning("reading %s: %s", self.dir, e)
                self.stop.wait(1.0)
            except Exception:         # never die quietly while /healthz says ok
                log.exception("following %s failed; trying again in 1 s", self.dir)
                self.stop.wait(1.0)


class KafkaFollower(threading.Thread):
    """The three topics, every partition, no consumer group (see the module's docstring)."""

    RECHECK_S = 5.0      # topics a worker has not created yet, or new partitions

    def __init__(self, cfg: dict, hub: Hub, stop: threading.Event):
        super().__init__(name="overlay-kafka", daemon=True)
        self.cfg, self.hub, self.stop = cfg, hub, stop
        k = cfg["kafka"]
        self.kinds = {k["topic_segments"]: "segment", k["topic_genres"]: "genre", k["topic_nowplaying"]: "nowplaying"}
        self.settled = False                # the records that were there at start are folded in

    def _assign_new(self, c, assigned: set, catchup: dict | None) -> None:
        from kafka import TopicPartition
        found = {TopicPartition(t, p) for t in self.kinds for p in (c.partitions_for_topic(t) or ())}
        new = found - assigned
        if not new:
            return
        positions = {tp: c.position(tp) for tp in assigned}
        c.assign(sorted(assigned | new))
        for tp, pos in positions.items():
            c.seek(tp, pos)
        c.seek_to_end(*new)
        ends = {tp: c.position(tp) for tp in new}
        c.seek_to_beginning(*new)
        replay = self.cfg["overlay"]["replay_records"]
        for tp in new:
            c.seek(tp, max(c.position(tp), ends[tp] - replay))
        if catchup is not None:
            catchup.update(ends)
        assigned |= new
        log.info("following %s", ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(new)))

    def run(self) -> None:
        from kafka.errors import KafkaError
        while not self.stop.is_set():
            try:
                self._follow()
            except KafkaError as e:     # the broker is not up yet, or went away: the cards wait, then catch up
                log.warning("Kafka: %s; trying again in %.0f s", e, self.RECHECK_S)
                self.stop.wait(self.RECHECK_S)
            except Exception:           # never die quietly while /healthz says ok
                log.exception("following the Kafka topics failed; trying again in %.0f s", self.RECHECK_S)
                self.stop.wait(self.RECHECK_S)

    def _follow(self) -> None:
        from pipeline.kafka.client import consumer
        k = self.cfg["kafka"]
        c = consumer(self.cfg, group_id=None, enable_auto_commit=False)
        assigned: set = set()
        catchup: dict | None = None if self.settled else {}
        next_check = 0.0
        try:
            while not self.stop.is_set():
                if time.monotonic() >= next_check:
                    self._assign_new(c, assigned, catchup)
                    next_check = time.monotonic() + self.RECHECK_S
                if not assigned:
                    self.settled = True
                    catchup = None
                    self.stop.wait(0.5)
                    continue
                for tp, msgs in c.poll(timeout_ms=k["poll_ms"]).items():
                    for m in msgs:
                        self.hub.feed(self.kinds[tp.topic], m.value, f"{tp.topic}[{tp.partition}]@{m.offset}")
                if catchup is not None and all(c.position(tp) >= end for tp, end in catchup.items()):
                    self.hub.settle()
                    self.settled = True
                    catchup = None
        finally:
            c.close()


def make_handler(hub: Hub, token: str | None, heartbeat_s: float, page: bytes, idle_timeout_s: float = 30.0,
                 healthy=lambda: None):
    """`healthy()`: None, or why the overlay cannot follow its records (/healthz says 503)."""
    class Handler(BaseHTTPRequestHandler):
        server_version = "onair-overlay"
        timeout = idle_timeout_s      # on the socket: an idle or stalled client frees its thread
        route = re.compile(r"/(api/nowplaying|events|overlay)/([^/]+)/?")

        def log_message(self, fmt, *args):  # the query string may hold the token
            log.debug("%s %s", self.address_string(), re.sub(r"(token=)[^&\s'\"]+", r"\1***", fmt % args))

        def _send(self, code: int, body: bytes, ctype: str, extra: dict | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("Referrer-Policy", "no-referrer")   # the page URL may hold the token
            self.send_header("X-Content-Type-Options", "nosniff")
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, obj, extra: dict | None = None) -> None:
            self._send(code, dumps(obj).encode(), "application/json; charset=utf-8", extra)

        def _authorised(self, query: dict) -> bool:
            if token is None:
                return True
            auth = self.headers.get("Authorization", "")
            given = auth[7:].strip() if auth.startswith("Bearer ") else (query.get("token") or [""])[0]
            return hmac.compare_digest(given.encode(), token.encode())

        def do_GET(self):
            url = urlsplit(self.path)
            if url.path == "/healthz":
                why = healthy()
                if why is not None:
                    return self._send(503, f"unhealthy: {why}\n".encode(), "text/plain; charset=utf-8")
                return self._send(200, b"ok\n", "text/plain; charset=utf-8")
            if not self._authorised(parse_qs(url.query)):
                return self._json(401, {"error": "a token is required: ?token=... or Authorization: Bearer ..."},
                                  {"WWW-Authenticate": "Bearer"})
            if url.path in ("/api/channels", "/api/channels/"):
                return self._json(200, {"channels": hub.channels()})
            m = self.route.fullmatch(url.path)
            if m is None:
                return self._json(404, {"error": "not found: try /api/channels, /api/nowplaying/CHANNEL, "
                                                 "/events/CHANNEL or /overlay/CHANNEL"})
            what, channel = m.group(1), unquote(m.group(2))
            if what == "overlay":
                initial = script_json(hub.state(channel))
                body = page.replace(INITIAL_SLOT, INITIAL_SLOT.replace(b">null<", f">{initial}<".encode()), 1)
                return self._send(200, body, "text/html; charset=utf-8")
            if what == "events":
                return self._events(channel)
            state = hub.state(channel, default=False)
            if state is None:
                return self._json(404, {"error": f"no records for channel {channel!r} yet"})
            return self._json(200, state)

        def _write(self, text: str) -> None:
            self.wfile.write(text.encode())
            self.wfile.flush()

        def _events(self, channel: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Accel-Buffering", "no")   # a proxy (nginx) must not hold events back
            self.end_headers()
            hub.metrics.overlay_clients.inc()
            try:
                self._write(f"retry: 2000\nevent: hello\ndata: {json.dumps({'heartbeat_s': heartbeat_s})}\n\n")
                state = hub.state(channel)
                self._write(f"event: state\ndata: {dumps(state)}\n\n")
                while not hub.closed:
                    new = hub.wait_change(channel, state["seq"], heartbeat_s)
                    if new["seq"] == state["seq"]:
                        self._write("event: ping\ndata: {}\n\n")    # the page tells a live server from a dead one
                        continue
                    state = new
                    self._write(f"event: state\ndata: {dumps(state)}\n\n")
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                pass
            finally:
                hub.metrics.overlay_clients.dec()

    return Handler


BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Retry-After: 5\r\nConnection: close\r\nContent-Length: 22\r\n\r\ntoo many connections\r\n")


class OverlayHTTPServer(ThreadingHTTPServer):
    daemon_threads = True      # an open SSE connection must not keep the process alive at shutdown
    allow_reuse_address = True
    request_queue_size = 128   # a burst of page loads (a studio's browsers starting) must not wait on SYN retries
    max_clients = 256

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._active = 0
        self._count_lock = threading.Lock()

    def process_request(self, request, client_address):
        with self._count_lock:
            busy = self._active >= self.max_clients
            if not busy:
                self._active += 1
        if busy:           # said at once, from the accepting thread: no thread for it
            try:
                request.settimeout(1.0)
                request.sendall(BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._count_lock:
                self._active -= 1


def make_server(host: str, port: int, handler, max_clients: int = 256) -> OverlayHTTPServer:
    cls = OverlayHTTPServer
    if ":" in host:
        cls = type("OverlayHTTPServer6", (OverlayHTTPServer,), {"address_family": socket.AF_INET6})
    try:
        server = cls((host, port), handler)
    except OSError as e:
        raise ValueError(f"overlay: cannot listen on {host}:{port}: {e.strerror or e}") from None
    server.max_clients = max_clients
    return server


def serve(cfg: dict, metrics, stop: threading.Event, directory: Path | None = None) -> int:
    """Run until `stop` is set; `directory` = follow a direct-mode output folder, else Kafka."""
    o = cfg["overlay"]
    token = overlay_token(cfg)
    check_bind(o["host"], token, o["token_env"])
    page = PAGE.read_bytes()
    if INITIAL_SLOT not in page:
        raise RuntimeError(f"{PAGE} has no slot for the initial state")
    hub = Hub(NowPlayingBoard(o["hold_s"], o["clear_s"], o["stale_s"]), metrics)
    if directory is not None:
        directory = Path(directory)
        if not directory.is_dir():
            log.warning("%s does not exist yet; its records are shown once it does", directory)
        follower = DirFollower(hub, directory, stop)
        follower.read_all()              # what is already there, before the first page asks
        hub.settle()
    else:
        follower = KafkaFollower(cfg, hub, stop)
    def healthy():
        return None if follower.is_alive() or stop.is_set() else f"the {follower.name} thread has stopped"
    httpd = make_server(o["host"], o["port"], make_handler(hub, token, o["heartbeat_s"], page, o["idle_timeout_s"],
                                                           healthy), o["max_clients"])
    host, port = httpd.server_address[:2]
    follower.start()
    threading.Thread(target=httpd.serve_forever, name="overlay-http", daemon=True).start()
    log.info("overlay on http://%s:%d/overlay/<channel> (also /api/channels, /api/nowplaying/<channel>, "
             "/events/<channel>); %s; following %s", host if ":" not in host else f"[{host}]", port,
             "a token is required" if token else "no token", directory or "Kafka (no consumer group)")
    try:
        while not stop.wait(TICK_S):
            hub.tick()
    finally:
        hub.close()
        httpd.shutdown()
        httpd.server_close()
        follower.join(timeout=10)
    return 0
