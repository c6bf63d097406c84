"""Following a growing JSONL file of direct mode (`onair run` writes one record
per line and flushes each), as `tail -F` would."""
from __future__ import annotations

from pathlib import Path


class JsonlTail:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.pos = 0
        self._ident = None

    def read(self) -> list[str]:
        """The complete lines appended since the last call ([] while the file does not exist)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return []
        ident = (st.st_dev, st.st_ino)
        # `onair run` into the same folder truncates its files: a file that shrank or was replaced is
        # read again from its start, or the follower would wait past its end for ever
        if ident != self._ident or st.st_size < self.pos:
            self._ident, self.pos = ident, 0
        if st.st_size == self.pos:
            return []
        with open(self.path, "rb") as f:
            f.seek(self.pos)
            chunk = f.read()
        keep = chunk.rfind(b"\n") + 1          # a half-written last line waits for its end
        self.pos += keep
        return [line for line in chunk[:keep].decode("utf-8", errors="replace").splitlines() if line.strip()]
