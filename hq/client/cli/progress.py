"""Progress of jobs being waited for: a tqdm bar on a terminal, plain lines otherwise.

`with Progress(stream) as progress:` gives a callable taking counts by state (or None when
not shown); leaving the block prints the final state.
"""

import os
import time

PLAIN_EVERY_S = 1.0


def summarize(counts):
    """(ended, total, parts) from counts by job state."""
    done = counts.get("done", 0)
    failed = sum(counts.get(s, 0) for s in ("failed", "cancelled", "lost"))
    running = counts.get("running", 0)
    pending = sum(counts.get(s, 0) for s in ("pending", "held", "dispatched"))  # not started
    parts = {"done": done, "failed": failed, "running": running, "pending": pending}
    return done + failed, done + failed + running + pending, parts


class Progress:
    def __init__(self, stream, tty=None, shown=True):
        self.shown = shown
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.started = time.monotonic()
        self.bar = None
        self.last_line = None
        self.last_time = 0.0
        self.counts = {}

    def __call__(self, counts):
        self.counts = counts
        ended, total, parts = summarize(counts)
        if self.tty:
            self._bar(ended, total, parts)
        elif time.monotonic() - self.last_time >= PLAIN_EVERY_S:
            self._line(ended, total, parts)

    def _bar(self, ended, total, parts):
        if self.bar is None:
            from tqdm import tqdm
            sized = _width(self.stream) > 0     # a terminal that reports no size: 80 x 24
            self.bar = tqdm(total=total, file=self.stream, unit="job", dynamic_ncols=sized,
                            ncols=None if sized else 80, nrows=None if sized else 24)
        self.bar.total = total
        self.bar.set_postfix(parts, refresh=False)
        self.bar.update(ended - self.bar.n)

    def _line(self, ended, total, parts):
        elapsed = max(1e-6, time.monotonic() - self.started)
        rate = ended / elapsed
        eta = f"{(total - ended) / rate:.0f}s" if rate and total > ended else "-"
        line = (f"{ended}/{total} ended: " + ", ".join(f"{k} {v}" for k, v in parts.items())
                + f"; {rate:.1f} jobs/s, eta {eta}")
        if line != self.last_line:
            self.stream.write(line + "\n")
            self.stream.flush()
            self.last_line = line
            self.last_time = time.monotonic()

    def __enter__(self):
        return self if self.shown else None

    def __exit__(self, *exc):
        if self.shown:
            self.close()

    def close(self):
        if self.bar is not None:
            self.bar.close()
        elif not self.tty and self.counts:
            self._line(*summarize(self.counts))


def _width(stream):
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 0
