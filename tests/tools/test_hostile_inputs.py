"""A fast subset of the clean-room run (tools/hostile_inputs.py): each command as a
subprocess on generated hostile inputs; no traceback, hang, outside write or code run."""

from __future__ import annotations

from pathlib import Path

from tools import hostile_inputs as hi

SUBSET = ("alias fan-out x2000", "fifo as the input", "-o under a missing directory",
          "tensor name 'x[/]'", "RD summary lie 0", "RD summary lie 2")


def test_clean_room_subset(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    builder = hi.Builder(tmp_path / "base")
    cases = [(c, d) for c, d in hi.archive_cases(builder, str(marker)) if c.name in SUBSET]
    cases += [(c, None) for c in hi.model_cases(str(marker)) if c.name in SUBSET]
    assert len(cases) == len(SUBSET)
    for i, (case, data) in enumerate(cases):
        hi.run_case(case, tmp_path / f"case{i}", data, marker)
        for run in case.runs:
            assert run.code is not None
            assert not run.findings, (case.name, run.args, run.findings, run.stderr[-500:])
    # the alias bomb is refused by reading commands; the FIFO never blocks
    alias = next(c for c, _ in cases if c.name.startswith("alias"))
    assert [r.code for r in alias.runs] == [0, 1, 3, 3, 3]
    fifo = next(c for c, _ in cases if c.name.startswith("fifo"))
    assert all(r.code in (1, 3) and "FIFO" in r.stderr for r in fifo.runs
               if r.args[0] not in ("pack", "api"))


def test_report_escapes_names() -> None:
    report = hi._report(hi.Totals(inputs=1), [("k", "a|b\x1b", 1, "0", 0, [], [])], "")
    assert "a\\|b\\x1b" in report and "| 1 |" in report
