"""A tiny text progress bar for the terminal (no dependency).

It draws on one line of ``stream`` (stderr by default) with carriage returns, at most
ten times a second, and only when the stream is a terminal (unless told otherwise), so
logs and pipes never fill up with bar fragments.
"""
import sys
import time

__all__ = ["ProgressBar", "format_bytes", "format_duration"]


def format_bytes(n):
    """``1536`` -> ``'1.5 KB'`` (powers of 1024, one decimal)."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def format_duration(seconds):
    """``75`` -> ``'1 min 15 s'``; ``4000`` -> ``'1 h 07 min'``; under ten seconds with
    one decimal."""
    seconds = max(float(seconds), 0.0)
    if seconds < 9.95:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    minutes = int(round(seconds / 60))
    return f"{minutes // 60} h {minutes % 60:02d} min"


class ProgressBar:
    """``bar = ProgressBar(total, label="train")``; ``bar.update(k)``; ``bar.close()``.

    ``total`` may be ``None`` (unknown: a counter without a bar). ``unit="B"`` shows
    byte counts as KB/MB. ``enabled=None`` means "when ``stream`` is a terminal".
    ``write(line)`` prints a line to stdout without breaking the bar; ``status(text)``
    shows ``text`` after the bar (what is happening between updates, such as an
    evaluation) until the next ``status``. With a ``total``, the bar shows the time
    left at the pace so far (pauses included) once a second has passed. Also a context
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
        self._status = ""

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
            text = (f"{head}[{bar}] {frac:4.0%} {self._count(self.n)}/{self._count(self.total)} "
                    f"{rate_txt}")
            if self.n and elapsed >= 1 and self.n < self.total:
                text += f", {format_duration((self.total - self.n) / rate)} left"
        else:
            text = f"{head}{self._count(self.n)} {rate_txt}"
        return f"{text}  {self._status}" if self._status else text

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

    def status(self, text):
        """Show ``text`` after the bar (``""`` removes it); drawn at once when it appears
        or goes, else at most ten times a second."""
        changed = not text or not self._status
        self._status = text
        if self.enabled and (changed or time.monotonic() - self._last_draw >= 0.1):
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


class DurationEstimate:
    """Says once how long a training run should take, through ``say(text)``: when the
    first epoch ends, from its pace (training and evaluation), if the rest takes at
    least ``MIN_SECONDS``; and before that, after ``EARLY_SECONDS`` of training, when
    the first epoch is slower than that (a long run should say so before the user has
    waited long). ``on_step(i)`` and ``on_epoch(record)`` are the training loop's hooks
    (:func:`fastbp.loop.run_loop`); ``evaluation`` a :class:`fastbp.loop.Evaluation`."""

    MIN_SECONDS = 30.0
    EARLY_SECONDS = 15.0

    def __init__(self, say, iters, start, n_epochs, evaluation):
        self.say, self.iters, self.start = say, iters, start
        self.n_epochs, self.evaluation = n_epochs, evaluation
        self.tic = time.perf_counter()
        self.first = None  # (iteration, time) at the end of the first step
        self.early = False  # said during the first epoch
        self.done = False  # said after it, or not needed

    def on_step(self, i):
        if self.early or self.done or i >= self.iters:
            return
        now = time.perf_counter()
        if self.first is None:  # the pace is taken after the first step (its set-up)
            self.first = (i, now)
            return
        elapsed = now - self.tic
        if elapsed >= self.EARLY_SECONDS and i > self.first[0]:
            self.early = True
            pace = (now - self.first[1]) / (i - self.first[0])
            total = elapsed + pace * (self.iters - i)
            later = " (a closer estimate follows the first epoch)" if self.n_epochs > 1 else ""
            self.say(f"about {pace:.3g} s per iteration: the {self.iters - self.start} iterations "
                     f"should take about {format_duration(total)} of training, plus an "
                     f"evaluation after each epoch{later}")

    def on_epoch(self, record):
        if self.done:
            return
        self.done = True
        if record.iteration >= self.iters:
            return
        ev = self.evaluation
        evaluating = ev.seconds or 0.0
        per_step = max(record.seconds - evaluating, 0.0) / max(record.steps, 1)
        left = self.n_epochs - record.epoch  # evaluations left, the last one final()
        final = evaluating
        if ev.sampled:  # the final evaluation scores the whole test set
            final *= (ev.n_train + ev.n_final) / (ev.n_train + ev.n_test)
        rest = per_step * (self.iters - record.iteration) + evaluating * (left - 1) + final
        if rest < self.MIN_SECONDS and not self.early:
            return
        end = time.strftime("%H:%M", time.localtime(time.time() + rest))
        epochs = f"{left} epoch" + ("" if left == 1 else "s")
        self.say(f"epoch {record.epoch} took {format_duration(record.seconds)} "
                 f"({format_duration(evaluating)} of it evaluating): the {epochs} left should "
                 f"take about {format_duration(rest)}, until about {end}")
