"""Local HTTP servers speaking the ACRCloud identify v1 and AudD wire formats,
scripted per test: each call pops the next behaviour (match, no_match, 500,
429 with Retry-After, slow), and every call is recorded. The ACRCloud server
checks the HMAC-SHA1 signature with its own copy of the secret."""
from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import threading
import time
from email import policy
from email.parser import BytesParser


def parse_multipart(content_type: str, body: bytes) -> dict:
    msg = BytesParser(policy=policy.HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    fields = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        fields[name] = payload if part.get_filename() else payload.decode()
    return fields


class ProviderServer:
    def __init__(self, kind: str, secret: str, access_key: str = "", slow_s: float = 3.0):
        self.kind, self.secret, self.access_key, self.slow_s = kind, secret, access_key, slow_s
        self.script: list[str] = []
        self.default = "match"
        self.title_of = None      # callable(clip bytes) -> title: answers that depend on the audio
        self.calls: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                fields = parse_multipart(self.headers["Content-Type"], body)
                with server.lock:
                    behaviour = server.script.pop(0) if server.script else server.default
                    server.calls.append({"path": self.path, "fields": fields, "behaviour": behaviour})
                status, doc, headers = server.answer(self.path, fields, behaviour)
                data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        path = "/v1/identify" if self.kind == "acrcloud" else "/"
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self):
        self.httpd.shutdown()

    BILLED = ("match", "no_match", "not_json", "wrong_shape", "null_entry")

    def paid_calls(self) -> int:
        """Calls answered 200 with a result or a body onair cannot use: what a provider bills."""
        return sum(1 for c in self.calls if c["behaviour"] in self.BILLED)

    def answer(self, path, f, behaviour):
        if behaviour == "slow":
            time.sleep(self.slow_s)
            behaviour = "match"
        if behaviour == "500":
            return 500, {"error": "internal"}, {}
        if behaviour == "429":
            return 429, {"error": "slow down"}, {"Retry-After": "1"}
        # hostile or broken answers that still come with HTTP 200
        if behaviour == "not_json":
            return 200, b"<html><body>Service temporarily degraded</body></html>", {}
        if behaviour == "wrong_shape":
            return 200, [], {}
        if behaviour == "null_entry":
            return 200, ({"status": {"code": 0, "msg": "Success"}, "metadata": {"music": [None]}}
                         if self.kind == "acrcloud" else {"status": "success", "result": ["x"]}), {}
        if self.kind == "acrcloud":
            msg = "\n".join(["POST", path, f.get("access_key", ""), f.get("data_type", ""),
                             f.get("signature_version", ""), f.get("timestamp", "")])
            good = base64.b64encode(hmac.new(self.secret.encode(), msg.encode(), hashlib.sha1).digest()).decode()
            if f.get("signature") != good or f.get("access_key") != self.access_key:
                return 200, {"status": {"code": 3001, "msg": "Missing/Invalid Access Key", "version": "1.0"}}, {}
            if len(f.get("sample", b"")) != int(f.get("sample_bytes", -1)):
                return 200, {"status": {"code": 3006, "msg": "Invalid arguments", "version": "1.0"}}, {}
            if behaviour == "no_match":
                return 200, {"status": {"code": 1001, "msg": "No Result", "version": "1.0"}}, {}
            title = self.title_of(f.get("sample", b"")) if self.title_of else "Song Title"
            return 200, {"status": {"code": 0, "msg": "Success", "version": "1.0"}, "metadata": {"music": [{
                "title": title, "artists": [{"name": "The Artist"}], "album": {"name": "The Album"},
                "external_ids": {"isrc": "GBAAA0000001"}, "score": 100, "acrid": "abc",
                "genres": [{"name": "Hip Hop"}, {"name": "R&B"}]}]}}, {}
        if f.get("api_token") != self.secret:
            return 200, {"status": "error", "error": {"error_code": 900, "error_message": "wrong api_token"}}, {}
        if behaviour == "no_match":
            return 200, {"status": "success", "result": None}, {}
        result = {"artist": "The Artist", "title": "Song Title", "album": "The Album", "timecode": "00:56",
                  "song_link": "https://lis.tn/x"}
        # as AudD does: the ISRC only inside the services' metadata, and only those `return` names
        wanted = set((f.get("return") or "").split(","))
        if "apple_music" in wanted:
            result["apple_music"] = {"isrc": "GBAAA0000002", "name": "Song Title",
                                     "genreNames": ["Hip-Hop/Rap", "Music"]}
        if "spotify" in wanted:
            result["spotify"] = {"external_ids": {"isrc": "GBAAA0000002"}, "name": "Song Title"}
        return 200, {"status": "success", "result": result}, {}
