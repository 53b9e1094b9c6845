"""A bounded fuzz run in CI: hostile archives give LlmcErrors, never crashes.

The long run is ``python fuzz/fuzz_llmc.py`` (see fuzz/README.md). Here the pure-Python
engine mutates real seed archives for a fixed budget (``LLMC_FUZZ_SECONDS``, default 20;
``LLMC_FUZZ_EXECS``, default 3000; ``LLMC_FUZZ_SEED``, default 0) and every reader entry
point runs on each input (open, keys, get_tensor, get_slice, read_attachment, inspect,
verify, unpack).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from fuzz.harness import ArchiveModel, Mutator, Target, fuzz_loop


def _seeds(seed_dir: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(seed_dir.glob("*.llmc"))]


def test_seed_archives_survive_the_model_round_trip(seed_dir: Path) -> None:
    """The structure-aware mutator's parse/serialize is exact, so its lies are the only
    difference between a mutated file and a real one."""
    seeds = _seeds(seed_dir)
    assert len(seeds) >= 3
    for data in seeds:
        assert ArchiveModel.parse(data).serialize() == data


def test_structure_aware_mutations_reach_the_decoders(seed_dir: Path) -> None:
    """Mutated files must get past the checksums: most open, many fail only in a codec."""
    seeds = _seeds(seed_dir)
    rng = random.Random(1)
    mutator = Mutator(seeds)
    target = Target(unpack=False, track_memory=False)
    try:
        target.warm_up(seeds[0])
        steps = []
        for _ in range(150):
            data, _ = mutator.mutate(rng.choice(seeds), rng)
            steps.append(target(data))
    finally:
        target.close()
    opened = sum(o.opened for o in steps)
    in_codec = sum(1 for o in steps if (o.steps.get("get_tensor") or "").startswith("CodecError"))
    assert opened > 30, opened
    assert in_codec > 10, in_codec


def test_bounded_fuzz_run_finds_no_crash(seed_dir: Path, tmp_path: Path) -> None:
    """A fixed number of mutated archives (not a time slot: how many run in N seconds is a
    speed figure, which a loaded machine fails), none crashing; the time cap only stops
    a hang. Longer campaigns: ``fuzz/fuzz_llmc.py`` or LLMC_FUZZ_EXECS/LLMC_FUZZ_SECONDS."""
    execs = int(os.environ.get("LLMC_FUZZ_EXECS", "200"))
    stats = fuzz_loop(
        _seeds(seed_dir),
        seconds=float(os.environ.get("LLMC_FUZZ_SECONDS", "600")),
        max_execs=execs,
        seed=int(os.environ.get("LLMC_FUZZ_SEED", "0")),
        crash_dir=tmp_path / "crashes",
    )
    print(stats.summary())
    assert stats.crashes == [], stats.summary()
    assert stats.executions == execs, stats.summary()  # all ran: none hung to the time cap
    assert any(k.startswith("get_tensor") for k in stats.outcomes), stats.summary()
    assert stats.slowest < 30.0, stats.summary()  # one input's time is bounded (a hang, not speed)
