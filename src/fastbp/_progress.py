"""A tiny text progress bar for the terminal (no dependency).

It draws on one line of ``stream`` (stderr by default) with carriage returns, at most
ten times a second, and only when the stream is a terminal (unless told otherwise), so
logs and pipes never fill up with bar fragments.
"""
import sys
import time

__all__ = ["ProgressBar", "format_bytes"]


def format_bytes(n):
    """``1536`` -> ``'1.5 KB'`` (powers of 1024, one decimal)."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


class ProgressBar:
    """``bar = ProgressBar(total, label="train")``; ``bar.update(k)``; ``bar.close()``.

    ``total`` may be ``None`` (unknown: a counter without a bar). ``unit="B"`` shows
    byte counts as KB/MB. ``enabled=None`` means "when ``stream`` is a terminal".
    ``write(line)`` prints a line to stdout without breaking the bar. Also a context
    manager (closes on exit).
    """

    def __init__(self, total, *, label="", unit="", stream=None, enabled=None, width=28):
        self.total = total
        self.label = label
        self.unit = unit
        self.stream = sys.stderr if stream is None else stream
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.width = width
        self.n = 0
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._drawn = 0  # width of the text on screen, to clear it

    def _count(self, n):
        return format_bytes(n) if self.unit == "B" else f"{n}"

    def _render(self):
        elapsed = time.monotonic() - self._start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        rate_txt = f"{format_bytes(rate)}/s" if self.unit == "B" else f"{rate:.0f} {self.unit or 'it'}/s"
        head = f"{self.label} " if self.label else ""
        if self.total:
            frac = min(self.n / self.total, 1.0)
            filled = int(round(frac * self.width))
            bar = "#" * filled + "." * (self.width - filled)
            return (f"{head}[{bar}] {frac:4.0%} {self._count(self.n)}/{self._count(self.total)} "
                    f"{rate_txt}")
        return f"{head}{self._count(self.n)} {rate_txt}"

    def _draw(self):
        text = self._render()
        pad = " " * max(self._drawn - len(text), 0)
        self.stream.write("\r" + text + pad)
        self.stream.flush()
        self._drawn = len(text)
        self._last_draw = time.monotonic()

    def _clear(self):
        if self._drawn:
            self.stream.write("\r" + " " * self._drawn + "\r")
            self.stream.flush()
            self._drawn = 0

    def update(self, n=1):
        self.n += n
        if self.enabled and (time.monotonic() - self._last_draw >= 0.1
                             or (self.total and self.n >= self.total)):
            self._draw()

    def write(self, line, file=None):
        """Print ``line`` (to stdout by default) above the bar."""
        if self.enabled:
            self._clear()
        print(line, file=sys.stdout if file is None else file, flush=True)
        if self.enabled and self.n:
            self._draw()

    def close(self):
        """Remove the bar from the screen."""
        if self.enabled:
            self._clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
