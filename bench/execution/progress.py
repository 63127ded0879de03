"""Progress on stderr: tqdm's bar on a terminal; elsewhere (a CI log, a file) plain lines at a
fixed interval, because a log shows every ``\\r`` redraw of a bar as one endless line."""

import sys
import time

#: Seconds between two plain progress lines.
PLAIN_INTERVAL_S = 30.0


class PlainProgress:
    """The part of tqdm's interface a run uses (``update``, ``set_postfix``, ``close``), printing
    ``done/total unit (pct), elapsed, postfix`` at most every ``interval`` seconds and once at
    the end."""

    def __init__(self, total: int, initial: int = 0, unit: str = "cell", stream=None, interval: float = PLAIN_INTERVAL_S,
                 clock=time.monotonic):  # fmt: skip
        self.total, self.n, self.unit = total, initial, unit
        self.stream = stream or sys.stderr
        self.interval, self.clock = interval, clock
        self.started = self.last = clock()
        self.postfix: dict = {}
        self.shown = initial

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.clock() - self.last >= self.interval:
            self._line()

    def set_postfix(self, refresh: bool = False, **values) -> None:
        self.postfix = values

    def close(self) -> None:
        if self.n != self.shown:
            self._line()

    def _line(self) -> None:
        self.last, self.shown = self.clock(), self.n
        share = f" ({self.n / self.total:.0%})" if self.total else ""
        extra = "".join(f", {key} {value}" for key, value in self.postfix.items())
        print(f"{self.n}/{self.total} {self.unit}s{share}, {self.last - self.started:.0f} s elapsed{extra}",
              file=self.stream, flush=True)  # fmt: skip


def progress_bar(total: int, initial: int = 0, unit: str = "cell", enabled: bool = True, stream=None):
    """A progress display for ``total`` items: tqdm on a terminal, ``PlainProgress`` lines otherwise."""
    from tqdm.auto import tqdm

    stream = stream or sys.stderr
    if enabled and not stream.isatty():
        return PlainProgress(total, initial, unit, stream)
    return tqdm(total=total, initial=initial, unit=unit, disable=not enabled, dynamic_ncols=True, file=stream)
