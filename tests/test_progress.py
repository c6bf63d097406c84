"""pipeline.progress: the progress line, on a terminal and in a log, driven by a hand-set clock."""
import io
import threading

from pipeline.progress import NOT_TTY_EVERY_S, Progress


class Clock:
    """Seconds that move only when the test says so."""

    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_log_lines_show_position_total_speed_and_music_share():
    out, clock = io.StringIO(), Clock()
    p = Progress(["a", "b"], out, every_s=2.0, totals={"a": 100.0}, tty=False, clock=clock).start()
    clock.t += 1
    p.note("a", 10.0, 3.0, 6.0)
    assert out.getvalue() == ""                      # not a terminal: at most one line every 30 s
    clock.t += NOT_TTY_EVERY_S
    p.note("b", 52.0)
    p.note("b", 53.0)                                # within the interval: no second line
    lines = out.getvalue().splitlines()
    assert lines == [f"[  {1 + NOT_TTY_EVERY_S:.0f} s]: 2x real time | a 10/100 s (10%) music 50% | b 52 s"]
    p.close()
    p.close()                                        # idempotent: one final line
    final = out.getvalue().splitlines()
    assert len(final) == 2 and final[1].startswith("done in 31.0 s: 2x real time | a 10/100 s (10%) music 50%")


def test_terminal_rewrites_one_line_and_ends_it_on_close():
    out, clock = io.StringIO(), Clock()
    p = Progress(["a"], out, every_s=2.0, totals={"a": 60.0}, tty=True, clock=clock).start()
    for i in range(1, 6):
        clock.t += 1
        p.note("a", 10.0 * i, 5.0 * i, 10.0 * i)
    p.close()
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    frames = text.rstrip("\n").split("\r")[1:]
    assert len(frames) == 3                          # at 2 s, 4 s and the final line
    assert frames[0].startswith("[   2 s]: 10x real time | a 20/60 s (33%) music 50%")
    assert frames[-1].startswith("done in 5.0 s: 10x real time | a 50/60 s (83%) music 50%")


def test_a_shorter_line_blanks_what_the_longer_one_left():
    out, clock = io.StringIO(), Clock()
    p = Progress(["a"], out, every_s=1.0, tty=True, clock=clock).start()
    clock.t += 1
    p.note("a", 12345.0, 1.0, 2.0)
    clock.t += 1
    p.note("a", 1.0)
    first, second = out.getvalue().split("\r")[1:]
    assert len(second) >= len(first)


def test_notes_from_many_threads_are_all_counted():
    out, clock = io.StringIO(), Clock()
    names = [f"ch{i}" for i in range(8)]
    p = Progress(names, out, tty=False, clock=clock).start()

    def feed(ch):
        for k in range(1, 501):
            p.note(ch, float(k), float(k), float(k))

    threads = [threading.Thread(target=feed, args=(ch,)) for ch in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    clock.t += 10
    p.close()
    assert "400x real time" in out.getvalue()        # 8 channels x 500 s in 10 s
    assert all(f"{ch} 500 s music 100%" in out.getvalue() for ch in names)
