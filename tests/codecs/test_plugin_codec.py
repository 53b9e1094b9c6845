"""A third-party codec, registered the way a plugin package registers it (an entry point in
the ``llmc_format.codecs`` group of an installed distribution), is chosen for packing,
packs to a target, unpacks, extracts raw and is offered by the CLI like a built-in one.

The distribution is real: a ``*.dist-info`` with ``entry_points.txt`` on ``sys.path``, found
by ``importlib.metadata`` — the registry's own lookup, nothing patched. The codec is tiny
(drop ``qp`` low bits of each 10-bit sample, zlib, one blob per 16 rows) but really lossy, so the
policy, the RD target, the check decode and the raw sidecar all see a lossy codec.
"""

from __future__ import annotations

import json
import sys
import textwrap
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import llmc_format
from llmc_format.cli import app
from llmc_format.codecs import registry
from llmc_format.container.reader import Reader

PLUGIN_SOURCE = '''
"""A toy lossy sample codec for llmc: keeps the high bits of each code."""
import zlib

import numpy as np

from llmc_format.codecs.base import ArrayBytesCodec, Encoded
from llmc_format.errors import CodecError

ROWS = 16  # rows per blob


class TinyShift(ArrayBytesCodec):
    codec_id = "tinyshift"
    takes_samples = True
    lossless = False
    qp_range = (0, 8)
    sample_qps = (1, 3, 5, 7)
    raw_extension = ".u16"

    def __init__(self, *, bits=10, qp=0, blobs=None):
        if not (isinstance(qp, int) and 0 <= qp <= 8):
            raise CodecError(f"tinyshift: qp must be 0..8, got {qp!r}")
        params = {"bits": bits, "qp": qp}
        if blobs is not None:
            params["blobs"] = blobs
        super().__init__(**params)

    def encode(self, array, spec):
        m = array.reshape(spec.shape[0], -1)
        kept = (m >> self.params["qp"]).astype("<u2")
        blobs = [zlib.compress(kept[r:r + ROWS].tobytes(), 9) for r in range(0, m.shape[0], ROWS)]
        return Encoded(blobs=blobs, config={**self.get_config(), "blobs": len(blobs)})

    def decode(self, fetch, n_blobs, spec, rows=None):
        lo, hi = rows if rows is not None else (0, spec.shape[0])
        cols = int(np.prod(spec.shape[1:], dtype=np.int64))
        qp, top = self.params["qp"], (1 << self.params["bits"]) - 1
        parts = []
        for b in range(lo // ROWS, -(-hi // ROWS)):
            kept = np.frombuffer(zlib.decompress(fetch(b)), dtype="<u2").reshape(-1, cols).astype(np.int64)
            parts.append(np.minimum((kept << qp) + ((1 << qp) >> 1), top))
        full = np.concatenate(parts) if parts else np.empty((0, cols), np.int64)
        start = (lo // ROWS) * ROWS
        out = full[lo - start:hi - start].astype(np.uint16)
        return spec.check(out.reshape(spec.rows_shape(rows)), rows)

    def raw_record(self, spec, files, sizes):
        return {"codec": self.get_config(),
                "samples": {"formula": "q = min((k << qp) + ((1 << qp) >> 1), 2**bits - 1), "
                                       "k = zlib-compressed little-endian uint16, 16 rows "
                                       "per file"},
                "frames": [{"file": f, "bytes": n} for f, n in zip(files, sizes)]}
'''


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Install a distribution ``llmc-tinyshift`` declaring the codec, for this test only."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "llmc_tinyshift.py").write_text(PLUGIN_SOURCE)
    dist = site / "llmc_tinyshift-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: llmc-tinyshift\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent("""\
        [llmc_format.codecs]
        tinyshift = llmc_tinyshift:TinyShift
    """))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    monkeypatch.setattr(registry, "_registry", dict(registry._registry))
    yield "tinyshift"
    sys.modules.pop("llmc_tinyshift", None)


def _weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {"layer.w": rng.standard_normal((96, 200)).astype(np.float32),
            "layer.b": rng.standard_normal(200).astype(np.float32)}


def test_registry_finds_the_entry_point(plugin: str) -> None:
    assert plugin not in registry._registry
    from llmc_format.pipeline.policy import codec_choices

    assert plugin in codec_choices()
    cls = registry.get_codec_class(plugin)
    assert cls.__module__ == "llmc_tinyshift" and cls.takes_samples


def test_plugin_packs_unpacks_and_extracts(plugin: str, tmp_path: Path) -> None:
    tensors = _weights()
    arc = llmc_format.save_file(tensors, tmp_path / "m.llmc", codec=plugin, qp=4,
                                min_lossy_numel=1000)
    with llmc_format.safe_open(arc) as f:
        w = f.get_tensor("layer.w")
        rows = f.get_slice("layer.w")[20:40]
        b = f.get_tensor("layer.b")
    assert np.array_equal(b, tensors["layer.b"])  # 1-D: exact by the default policy
    err = w - tensors["layer.w"]
    assert 0 < np.abs(err).max() < 0.2  # lossy, and a codec of the affine codes' high bits
    assert np.array_equal(rows, w[20:40])
    with Reader(arc) as reader:
        assert [c["id"] for c in reader.tensor("layer.w").pipeline] == ["affine", plugin]

    runner = CliRunner()
    r = runner.invoke(app, ["extract", str(arc), "layer.w", "--raw", "-o", str(tmp_path / "x")])
    assert r.exit_code == 0, r.output
    side = json.loads((tmp_path / "x.json").read_text())
    files = [fr["file"] for fr in side["frames"]]
    assert files == [f"x.{k:03d}.u16" for k in range(6)]  # 96 rows / 16
    assert side["dequantization"]["stage"] == "affine"
    # rebuild with numpy from the raw files and the sidecar alone
    dq, qp = side["dequantization"], side["codec"]["qp"]
    kept = np.concatenate([np.frombuffer(zlib.decompress((tmp_path / n).read_bytes()), "<u2").reshape(-1, 200)
                           for n in files]).astype(np.int64)
    codes = np.minimum((kept << qp) + ((1 << qp) >> 1), 2 ** dq["bits"] - 1)
    rebuilt = (codes.astype(np.float32) * np.array(dq["scale"], np.float32)
               + np.array(dq["offset"], np.float32))
    assert rebuilt.astype(np.float32).tobytes() == w.tobytes()

    r = runner.invoke(app, ["unpack", str(arc), "-o", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    from safetensors.numpy import load_file

    out = load_file(str(next((tmp_path / "out").glob("*.safetensors"))))
    assert np.array_equal(out["layer.w"], w)


def test_plugin_packs_to_a_target(plugin: str, tmp_path: Path) -> None:
    tensors = _weights()
    arc = llmc_format.save_file(tensors, tmp_path / "t.llmc", codec=plugin, bpw=6.0,
                                min_lossy_numel=1000, jobs=1)
    info = llmc_format.inspect(arc)
    lossy = next(t for t in info["tensors"] if t["name"] == "layer.w")
    assert lossy["qp"] in range(0, 9)
    assert lossy["codec"].endswith(plugin) and 0 < lossy["bpw"] <= 6.0 * 1.02


def test_plugin_is_offered_by_pack_help(plugin: str, tmp_path: Path) -> None:
    """``llmc pack --help`` lists the installed codecs, the plugin among them (a fresh
    process: the help is built when the CLI starts)."""
    import os
    import subprocess

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "COLUMNS": "400", "NO_COLOR": "1",
           "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(root)])}
    out = subprocess.run([sys.executable, "-c", "from llmc_format.cli import app; app()",
                          "pack", "--help"], capture_output=True, text=True, env=env,
                         check=True, timeout=120).stdout
    installed = out.split("Installed:")[1].split(".")[0]
    assert plugin in installed and "vvc" in installed and "ggml" not in installed
