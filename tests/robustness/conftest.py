"""Shared fixtures of the robustness tests: real seed archives and an index rewriter.

Helpers are fixtures because tests run with ``--import-mode=importlib`` (a test module
cannot import a sibling helper module).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fuzz.harness import ArchiveModel, build_seeds


@pytest.fixture(scope="session")
def seed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small real archives (exact, metadata-updated, one per available video codec)."""
    d = tmp_path_factory.mktemp("seeds")
    build_seeds(d, video=True)
    return d


@pytest.fixture
def forge() -> Callable[[Path, Callable[[ArchiveModel], None], Path], Path]:
    """Parse an archive, apply ``lie(model)`` (index values and/or blob payloads), and
    write it out with a valid layout and valid checksums at ``out``."""
    def make(src: Path, lie: Callable[[ArchiveModel], None], out: Path) -> Path:
        model = ArchiveModel.parse(src.read_bytes())
        lie(model)
        out.write_bytes(model.serialize())
        return out

    return make
