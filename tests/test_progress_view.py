"""The progress line: fits 80 columns, human counts, a clock that keeps running, and
event logs showing every phase of a pack reports often (no frozen display)."""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import pytest
from rich.console import Console

from llmc_format.progress_view import ProgressView, format_duration, human_count


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_human_counts_and_durations() -> None:
    assert [human_count(n) for n in (272, 12_512_768, 22_713_728, 840_000)] == \
        ["272", "12.5M", "22.7M", "840k"]
    assert format_duration(8.24) == "8.2 s" and format_duration(185) == "3 min 05 s"


def _render(view: ProgressView) -> list[str]:
    buf = io.StringIO()
    Console(file=buf, width=80, force_terminal=True, color_system=None).print(
        view._bar.get_renderable())
    return buf.getvalue().rstrip("\n").split("\n")


def test_line_fits_80_columns_and_the_clock_runs_through_a_finished_step() -> None:
    clock = FakeClock()
    console = Console(file=io.StringIO(), width=80, force_terminal=True, color_system=None)
    with ProgressView(console, "pack:", clock=clock) as view:
        view("pass 1: encoding", "model.layers.29.self_attn.q_proj.weight", 12_512_768,
             22_713_728)
        clock.t += 65
        [line] = _render(view)
        assert len(line) <= 80
        assert "pack: pass 1: encoding" in line  # the step in full
        assert "q_proj.weight" in line  # the item cut from the left
        assert "12.5M/22.7M" in line and "0:01:05" in line
        view("sampling", "model.norm.weight", 272, 272)  # a finished step...
        clock.t += 30  # ...then a long one that reports nothing yet
        [line] = _render(view)
        assert "0:01:35" in line  # the clock still runs (rich's own stops at 272/272)


def test_verbose_prints_each_step_with_its_duration() -> None:
    clock, buf = FakeClock(), io.StringIO()
    console = Console(file=buf, width=80, color_system=None)
    with ProgressView(console, "pack:", verbose=True, clock=clock) as view:
        view("sampling", "a", 1, 2)
        clock.t += 12
        view("pass 1: encoding", "a", 5, 10)
        clock.t += 3
    text = buf.getvalue()
    assert "pack: sampling (2): 12.0 s" in text and "pack: pass 1: encoding (10): 3.0 s" in text
    assert view.max_gap() == 12


def test_calibration_reports_every_token_and_gradient(tiny_model_dir: Path) -> None:
    from llmc_format.io import open_source
    from llmc_format.rd.calibration import SELF, sensitivities

    events: list[tuple[str, str, int, int]] = []
    with open_source(tiny_model_dir) as src:
        sensitivities(src, SELF, sequences=2, seq_len=16,
                      progress=lambda *e: events.append(e))
    steps = [e[0] for e in events]
    assert steps[0] == "calibration: building the model"
    assert steps.index("calibration: loading weights") < steps.index("calibration: generating") \
        < steps.index("calibration: gradients")
    generating = [e for e in events if e[0] == "calibration: generating"]
    assert [e[2] for e in generating] == list(range(1, 16))  # each of 15 new tokens
    grads = [e for e in events if e[0] == "calibration: gradients"]
    assert grads[-1][2] == grads[-1][3] and len(grads) == grads[-1][3]  # every step seen
    assert {e[1] for e in grads} == {"sequence 1/2", "sequence 2/2"}


@pytest.mark.slow
def test_smollm2_calibration_never_goes_5_seconds_without_progress(smollm_gguf: Path) -> None:
    """What a SmolLM2 ``--bpw 3`` pack spent 13 minutes in without a word: now events come
    steadily. Judged as a share of the whole calibration, not in seconds: a loaded machine
    slows every step alike (a 5 s bound failed at load 8), a silent phase does not shrink."""
    from llmc_format.io import open_source
    from llmc_format.rd.calibration import SELF, sensitivities

    view = ProgressView(Console(file=io.StringIO()), "pack:", quiet=True)
    with open_source(smollm_gguf) as src, view:
        sensitivities(src, SELF, progress=view)
    steps = {e[1] for e in view.events}
    assert steps == {"calibration: building the model", "calibration: loading weights",
                     "calibration: generating", "calibration: gradients"}
    # after the model is built (one blocking call: import and construction), no step is
    # silent for more than 5% of the calibration (idle, about 5 s of about 150 s)
    built = next(i for i, e in enumerate(view.events) if e[1] != "calibration: building the model")
    events = view.events[built:]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(events)]
    assert max(gaps) < 0.05 * (events[-1][0] - events[0][0]), (max(gaps), len(gaps))


def test_verbose_prints_a_line_per_item_done() -> None:
    clock, buf = FakeClock(), io.StringIO()
    console = Console(file=buf, width=80, color_system=None)
    with ProgressView(console, "pack:", verbose=True, clock=clock) as view:
        view("encoding", "", 0, 30)  # the step starts: nothing done yet
        view("encoding", "a.weight", 10, 30)
        view("encoding", "layers.2.w\x1b[2J", 30, 30)
        view("generating", "2 sequences", 1, 9)  # a count growing under one item:
        view("generating", "2 sequences", 2, 9)  # one line, not one per token
    lines = buf.getvalue().splitlines()
    assert lines == ["pack: encoding a.weight (10/30)",
                     "pack: encoding layers.2.w\\x1b[2J (30/30)",
                     "pack: encoding (30): 0.0 s", "pack: generating 2 sequences (1/9)",
                     "pack: generating (9): 0.0 s"]
    buf = io.StringIO()
    with ProgressView(Console(file=buf), "pack:", verbose=False, clock=clock) as view:
        view("encoding", "a.weight", 10, 30)
        view("encoding", "b.weight", 30, 30)
    assert buf.getvalue() == ""


def test_the_drawn_clock_runs_with_no_event_at_all() -> None:
    """The frozen clock of issue 18, with the real refresh thread and the real clock: a
    step that reports nothing for 2.3 s (calibration once reported nothing for 13 min)
    still shows the time advancing on the terminal, second by second."""
    import re
    import time

    buf = io.StringIO()
    console = Console(file=buf, width=80, force_terminal=True, color_system=None)
    with ProgressView(console, "pack:") as view:
        view("sampling", "model.norm.weight", 272, 272)  # a finished step (rich stops
        time.sleep(2.3)  # its own clock there), then no event: only the refresh draws
    clocks = set(re.findall(r"0:00:0(\d)", buf.getvalue()))
    assert {"0", "1", "2"} <= clocks, buf.getvalue()[-400:]
