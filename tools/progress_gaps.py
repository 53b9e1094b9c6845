"""Record the progress events of a real ``llmc pack`` and report the longest silences.

Issue 18: a SmolLM2 ``--bpw 3`` pack once sat 13 minutes on ``272/272`` with its clock
stopped. This runs the command with ``LLMC_PROGRESS_LOG`` (every event the progress line
draws: time, step, item, done, total), keeps the log, and prints, per step, the events
and the longest time without one; ``tests/test_progress_view.py`` checks a kept log.

    python -m tools.progress_gaps --log docs/results/progress-smollm2-bpw3.jsonl \\
        -- --codec vvc --bpw 3             # packs SmolLM2 (tools.models) into a temp dir
    python -m tools.progress_gaps --log FILE --report-only   # summarize an existing log
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def read_log(path: Path) -> list[tuple[float, str, str, int, int]]:
    """The events of a ``LLMC_PROGRESS_LOG`` file, in order."""
    return [tuple(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def gaps(events: list[tuple[float, str, str, int, int]]) -> dict[str, float]:
    """Per step, the longest time from the previous event (any step) to one of its events;
    the first event counts from the command's start."""
    out: dict[str, float] = {}
    previous = 0.0
    for t, step, *_ in events:
        out[step] = max(out.get(step, 0.0), t - previous)
        previous = t
    return out


def report(events: list[tuple[float, str, str, int, int]]) -> str:
    lines = [f"{len(events)} events over {events[-1][0]:.1f} s" if events else "no events"]
    counts = {k: len(list(g)) for k, g in itertools.groupby(sorted(e[1] for e in events))}
    for step, gap in gaps(events).items():
        lines.append(f"  {step}: {counts[step]} events, longest silence before one {gap:.2f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--log", type=Path, required=True, help="the event log to write (or read)")
    ap.add_argument("--report-only", action="store_true", help="only summarize --log")
    ap.add_argument("pack_args", nargs="*", help="options of llmc pack, after --")
    args = ap.parse_args(argv)
    if not args.report_only:
        sys.path.insert(0, str(ROOT))
        from tools.models import smollm2_gguf_path

        args.log.unlink(missing_ok=True)
        with tempfile.TemporaryDirectory(prefix="llmc-gaps-") as work:
            env = {**os.environ, "LLMC_PROGRESS_LOG": str(args.log.resolve()),
                   "PYTHONPATH": str(ROOT)}
            cmd = [sys.executable, "-m", "llmc_format.cli", "pack", str(smollm2_gguf_path()),
                   "-o", str(Path(work) / "out.llmc"), "-q", *args.pack_args]
            code = subprocess.run(cmd, env=env, check=False).returncode
            if code:
                print(f"llmc pack exited {code}", file=sys.stderr)
                return code
    print(report(read_log(args.log)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
