"""The progress line of the ``llmc`` commands: named step, item, bar, counts, running clock.

The pipeline reports ``(step, item, done, total)`` events (``pack`` counts weights,
calibration counts tokens and gradients, RD sampling counts tensors). ``ProgressView``
draws them on stderr as one line that fits the terminal (80 columns included): the step
in full, the item cut from the left, a bar, human counts (``12.5M/22.7M``) and the time
since the command started — a clock that keeps running whatever a step does (rich stops a
finished task's own clock, which is how a pack once showed a frozen ``272/272`` for
minutes while calibration ran with no events).

It also keeps the events (time, step, item, done, total): ``-v`` prints a line per item
done (a tensor packed, decoded, checked) and each step's duration as it ends,
``LLMC_PROGRESS_LOG=FILE`` writes them as JSON lines, and tests check them (``max_gap``:
the longest time without an event).
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task
from rich.text import Text

from llmc_format.naming import printable

Event = tuple[float, str, str, int, int]


def human_count(n: float) -> str:
    """12.5M, 840k, 272: counts that fit a narrow line."""
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            v = n / div
            return f"{v:.1f}{unit}" if v < 100 else f"{v:.0f}{unit}"
    return f"{int(n)}"


def format_duration(seconds: float) -> str:
    """``8.2 s``, ``3 min 05 s``, ``1 h 02 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(round(seconds), 60)
    if m < 60:
        return f"{m} min {s:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


class _StepColumn(ProgressColumn):
    """``what step item``, the item cut from the left to fit the room left."""

    def __init__(self, view: ProgressView) -> None:
        super().__init__()
        self.view = view

    def render(self, task: Task) -> Text:
        room = max(10, self.view.console.width - self.view.fixed_width)
        step = f"{self.view.what} {self.view.step}".strip()
        item = printable(self.view.item)
        text = step if not item else f"{step} {item}"
        if len(text) > room:
            keep = room - len(step) - 2
            text = f"{step} …{item[-keep:]}" if keep >= 8 else step[:room]
        return Text(f"{text:<{room}}", no_wrap=True, overflow="crop")


class _CountClock(ProgressColumn):
    def __init__(self, view: ProgressView) -> None:
        super().__init__()
        self.view = view

    def render(self, task: Task) -> Text:
        total = self.view.total
        counts = (f"{human_count(self.view.done)}/{human_count(total)}" if total
                  else "")
        return Text(f"{counts:>11} {_clock(self.view.elapsed):>7}", no_wrap=True)


class ProgressView:
    """Callable as ``progress(step, item, done, total)``; a context manager that draws.

    ``quiet`` draws nothing (events are still kept); ``verbose`` prints a line per item
    done (an event naming a new item whose count grew within its step) and per finished
    step with its duration; ``clock`` is injectable for tests.
    """

    BAR = 16
    #: columns taken by everything but the step text: bar, counts, clock and gaps
    fixed_width = BAR + 11 + 1 + 7 + 3

    def __init__(self, console: Console, what: str = "", *, quiet: bool = False,
                 verbose: bool = False, clock: Callable[[], float] = time.monotonic,
                 log_path: str | None = None) -> None:
        self.console, self.what, self.quiet, self.verbose = console, what, quiet, verbose
        self.clock = clock
        self.start = clock()
        self.events: list[Event] = []
        self.step, self.item, self.done, self.total = "starting", "", 0, 0
        self._step_started = self.start
        self._log = open(log_path, "a") if log_path else None  # noqa: SIM115 - closed in __exit__
        self._bar: Progress | None = None
        self._task: Any = None

    @property
    def elapsed(self) -> float:
        return self.clock() - self.start

    def __enter__(self) -> ProgressView:
        if not self.quiet and self.console.is_terminal:  # a log file gets no bar
            self._bar = Progress(_StepColumn(self), BarColumn(bar_width=self.BAR),
                                 _CountClock(self), console=self.console, transient=True,
                                 refresh_per_second=4)
            self._task = self._bar.add_task("", total=None)
            self._bar.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if kind is None:
            self._end_step()
        if self._bar is not None:
            self._bar.__exit__(kind, exc, tb)
        if self._log is not None:
            self._log.close()

    def __call__(self, step: str, item: str, done: int, total: int) -> None:
        now = self.clock()
        if step != self.step:
            self._end_step()
            self._step_started = now
            self.item, self.done = "", 0
        if self.verbose and not self.quiet and item and item != self.item and done > self.done:
            # an item done (a tensor packed, checked...); a count that grows under the same
            # item (calibration's tokens) is progress, not a new line
            self.console.print(Text(f"{self.what} {step} {printable(item)} "
                                    f"({human_count(done)}/{human_count(total)})"),
                               highlight=False, soft_wrap=True)
        self.step, self.item, self.done, self.total = step, item, done, total
        event = (now - self.start, step, item, done, total)
        self.events.append(event)
        if self._log is not None:
            self._log.write(json.dumps(event) + "\n")
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=total or None)

    def _end_step(self) -> None:
        if self.verbose and self.step != "starting" and not self.quiet:
            took = self.clock() - self._step_started
            counts = f" ({human_count(self.total)})" if self.total > 1 else ""
            self.console.print(f"{self.what} {self.step}{counts}: {format_duration(took)}",
                               highlight=False, soft_wrap=True)

    def max_gap(self) -> float:
        """The longest stretch without an event, from the start to the last event."""
        times = [0.0] + [e[0] for e in self.events]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def from_environment(console: Console, what: str, *, quiet: bool, verbose: bool) -> ProgressView:
    """A view that also logs its events to ``$LLMC_PROGRESS_LOG`` when that is set."""
    return ProgressView(console, what, quiet=quiet, verbose=verbose,
                        log_path=os.environ.get("LLMC_PROGRESS_LOG") or None)
