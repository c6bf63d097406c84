"""Following the growing JSONL files of direct mode (`onair run` writes one record
per line and flushes each), as `tail -F` would, across the daily rotation."""
from __future__ import annotations

from pathlib import Path

from pipeline.outputs import day_dirs


class JsonlTail:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.pos = 0
        self.lines = 0            # complete lines read so far
        self._ident = None

    def read(self) -> list[str]:
        """The complete lines appended since the last call ([] while the file does not exist)."""
        return [line for _, line in self.read_numbered()]

    def read_numbered(self) -> list[tuple[int, str]]:
        """(line number, text) of the complete, non-blank lines appended since the last call."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return []
        ident = (st.st_dev, st.st_ino)
        # `onair run` into the same folder truncates its files: a file that shrank or was replaced is
        # read again from its start, or the follower would wait past its end for ever
        if ident != self._ident or st.st_size < self.pos:
            self._ident, self.pos, self.lines = ident, 0, 0
        if st.st_size == self.pos:
            return []
        with open(self.path, "rb") as f:
            f.seek(self.pos)
            chunk = f.read()
        keep = chunk.rfind(b"\n") + 1          # a half-written last line waits for its end
        self.pos += keep
        out = []
        # split on "\n" only: str.splitlines would also cut inside a title at U+2028 or U+0085
        for raw in chunk[:keep].split(b"\n")[:-1]:
            self.lines += 1
            if raw.strip():
                out.append((self.lines, raw.decode("utf-8", errors="replace")))
        return out


class DailyTail:
    """DIR/YYYY-MM-DD/<name>.jsonl (pipeline.outputs.DailyJsonl): the newest day's file when the
    follower starts and every later day's, each followed as it grows; a day's file can still grow
    after the next day's has begun (a segment is written when it closes, channels lag each other).
    A plain DIR/<name>.jsonl (not the link to the newest day: written by an older onair or by
    another tool) is followed while no day has a file of that name."""

    def __init__(self, directory: str | Path, name: str, from_day: str | None = None):
        self.dir = Path(directory)
        self.name = name
        days = day_dirs(self.dir)
        self.from_day = from_day if from_day is not None else (days[-1] if days else "")
        self.tails: dict[str, JsonlTail] = {}
        self.plain = JsonlTail(self.dir / f"{name}.jsonl")

    def read(self) -> list[str]:
        """The complete lines appended since the last call, day by day."""
        return [line for _, _, line in self.read_numbered()]

    def read_numbered(self) -> list[tuple[Path, int, str]]:
        """(file, line number, text) of the complete lines appended since the last call."""
        out: list[tuple[Path, int, str]] = []
        for day in day_dirs(self.dir):
            path = self.dir / day / f"{self.name}.jsonl"
            if day < self.from_day or (day not in self.tails and not path.exists()):
                continue
            tail = self.tails.get(day)
            if tail is None:
                tail = self.tails[day] = JsonlTail(path)
            out += [(path, n, line) for n, line in tail.read_numbered()]
        if not self.tails and not self.plain.path.is_symlink():
            out += [(self.plain.path, n, line) for n, line in self.plain.read_numbered()]
        return out
