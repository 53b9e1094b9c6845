"""Published conformance vectors keep reading exactly as they did (spec/FORMAT.md §11)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import llmc_format
from llmc_format import errors
from llmc_format.api import LlmcFile
from llmc_format.container import layout
from llmc_format.pipeline.pack import tensor_digest

VECTORS = Path(__file__).resolve().parent.parent / "spec" / "vectors"
CASES = sorted(p.stem for p in VECTORS.glob("*.json"))


def test_vectors_exist() -> None:
    assert "v1-exact-basic" in CASES
    assert any(c.startswith("bad-") for c in CASES)


def _check_invalid(path: Path, expected: dict) -> None:
    """The reader reports exactly the taxonomy error the vector names (not a parent or a
    sibling kind), at the stage it names; at decode, every other tensor still reads."""
    want = expected["error"]
    assert want in errors.by_kind(), f"{want!r} is not an error name of FORMAT.md §8.1"
    if expected["at"] == "open":
        with pytest.raises(errors.LlmcError) as info:
            llmc_format.safe_open(path).close()
        assert info.value.kind == want, info.value
        assert not llmc_format.verify(path).ok
        return
    assert expected["at"] == "decode"
    with llmc_format.safe_open(path) as f:
        if "tensor" in expected:
            with pytest.raises(errors.LlmcError) as info:
                f.get_tensor(expected["tensor"])
            for k in f.keys():
                if k != expected["tensor"]:
                    f.get_tensor(k)
        else:
            with pytest.raises(errors.LlmcError) as info:
                f.read_attachment(expected["attachment"])
        assert info.value.kind == want, info.value
    assert not llmc_format.verify(path).ok


#: FORMAT.md §11: the canonical NaN of ``xxh3_nan_canonical``, per dtype (as bits)
CANONICAL_NAN = {np.dtype(np.float32): (np.uint32, 0x7FC00000),
                 np.dtype(np.float16): (np.uint16, 0x7E00)}


def _nan_canonical(a: np.ndarray) -> np.ndarray:
    """§11: ``a``'s elements as unsigned ints, every NaN replaced by the canonical NaN
    (written from the spec's words, not shared with tools/make_vectors.py)."""
    ints, bits = CANONICAL_NAN[a.dtype]
    out = np.ascontiguousarray(a).copy().view(ints)
    out[np.isnan(a)] = bits
    return out


def _check_row_ranges(f: LlmcFile, name: str, whole: np.ndarray, nan_bits: bool = True) -> None:
    """FORMAT.md §12: any row range decodes to exactly those rows of the whole tensor (up
    to the bits of NaNs when ``nan_bits`` is False: some came from two NaNs, §7.6)."""
    if not whole.ndim:
        return  # a 0-d tensor has no row access in this API (the spec's one row is itself)
    n = whole.shape[0]
    for a, b in {(0, 0), (0, n), (0, min(1, n)), (n // 3, min(n, n // 3 + 7)),
                 (max(0, n - 1), n), (min(n, 32), min(n, 64))}:
        part = f.get_slice(name)[a:b]
        ref = whole[a:b]
        assert part.shape == ref.shape, (name, a, b)
        if nan_bits:
            assert part.tobytes() == ref.tobytes(), (name, a, b)
        else:
            assert _nan_canonical(part).tobytes() == _nan_canonical(ref).tobytes(), (name, a, b)


def _check_nan_keys(path: Path, name: str, arr: np.ndarray, want: dict) -> None:
    """§11, v1-ggml-nonfinite: the NaN keys, and that the entry has ``digest.decoded``
    exactly when the JSON says (the writer's digest rule, §7.6)."""
    from llmc_format.container.reader import Reader

    if "nan_count" in want:
        mask = np.isnan(arr)
        assert int(mask.sum()) == want["nan_count"], name
        assert layout.checksum(mask.astype(np.uint8).tobytes()) == want["nan_mask_xxh3"], name
        assert layout.checksum(_nan_canonical(arr).tobytes()) == want["xxh3_nan_canonical"], name
    if "digest_decoded" in want:
        with Reader(path) as r:
            assert ("decoded" in (r.tensor(name).digest or {})) == want["digest_decoded"], name


@pytest.mark.parametrize("name", CASES)
def test_vector(name: str) -> None:
    expected = json.loads((VECTORS / f"{name}.json").read_text())
    path = VECTORS / f"{name}.llmc"
    if not expected["valid"]:
        _check_invalid(path, expected)
        return
    with llmc_format.safe_open(path) as f:
        assert sorted(f.keys()) == sorted(expected["tensors"])
        for k, want in expected["tensors"].items():
            arr = f.get_tensor(k)
            assert list(arr.shape) == want["shape"], k
            assert f.info(k)["dtype"] == want["dtype"], k
            # no xxh3: some NaN of the tensor came from two NaNs, its bits are not normative
            assert "xxh3" in want or "xxh3_nan_canonical" in want, k
            if "xxh3" in want:
                assert tensor_digest(arr) == want["xxh3"], k
            _check_nan_keys(path, k, arr, want)
            _check_row_ranges(f, k, arr, nan_bits="xxh3" in want)
        for a, digest in expected["attachments"].items():
            assert layout.checksum(f.read_attachment(a)) == digest
    assert llmc_format.verify(path).ok


DIGESTS = VECTORS / "SHA256SUMS"


def test_every_vector_file_is_pinned_by_its_sha256() -> None:
    """A vector is never regenerated silently: SHA256SUMS lists each file's digest."""
    import hashlib

    pinned = dict(reversed(line.split("  ", 1)) for line in DIGESTS.read_text().splitlines())
    files = sorted(p.name for p in VECTORS.glob("*.llmc"))
    assert sorted(pinned) == files
    for name in files:
        assert hashlib.sha256((VECTORS / name).read_bytes()).hexdigest() == pinned[name], name


@pytest.mark.parametrize("name", CASES)
def test_vector_under_a_strict_reader(name: str) -> None:
    """verify --strict: bitstream rules and the installed second decoders (docs/decoders.md).

    A vector whose JSON has ``strict`` is known bad encoder output: a lenient reader reads
    it (test_vector), a strict one reports exactly the tensor named."""
    expected = json.loads((VECTORS / f"{name}.json").read_text())
    if not expected["valid"]:
        pytest.skip("invalid vector: no tensor to hold to the bitstream rules")
    report = llmc_format.verify(VECTORS / f"{name}.llmc", strict=True)
    if "strict" not in expected:
        assert report.ok, [t.problem for t in report.tensors if not t.ok]
        return
    bad = [t for t in report.tensors if not t.ok]
    assert [t.name for t in bad] == [expected["strict"]["tensor"]]
    assert f"frame {expected['strict']['frame']}" in bad[0].problem
    assert errors.BitstreamError.kind == expected["strict"]["error"]  # the taxonomy's name


@pytest.mark.parametrize("name", [c for c in CASES if "gguf" in json.loads(
    (VECTORS / f"{c}.json").read_text())])
def test_vector_rebuilds_its_gguf_file(name: str, tmp_path: Path) -> None:
    """FORMAT.md §7.8: the GGUF layout record and the ``ggml`` blocks give back the GGUF file
    the vector was packed from, byte for byte (its SHA-256 and size are in the JSON)."""
    import hashlib

    from llmc_format.pipeline.unpack import unpack

    want = json.loads((VECTORS / f"{name}.json").read_text())["gguf"]
    result = unpack(VECTORS / f"{name}.llmc", tmp_path / "out", format="gguf")
    assert result.files == ["model.gguf"]
    data = (tmp_path / "out" / "model.gguf").read_bytes()
    assert len(data) == want["size"]
    assert hashlib.sha256(data).hexdigest() == want["sha256"]


GRIDS = VECTORS.parent / "ggml-grids.txt"


def test_ggml_grids_file_is_the_one_format_md_pins() -> None:
    """spec/ggml-grids.txt is normative data (§7.6): its SHA-256 is quoted in FORMAT.md
    (that its tables are gguf's: tests/tools/test_make_ggml_grids.py)."""
    import hashlib

    digest = hashlib.sha256(GRIDS.read_bytes()).hexdigest()
    assert digest in (VECTORS.parent / "FORMAT.md").read_text()


def test_ggml_scales_vector_values_are_gguf_pys() -> None:
    """v1-ggml-scales (FORMAT.md §7.6, revision 1.7): its NVFP4 (every scale byte 0x00..0xFF)
    and Q8_K tensors decode to what gguf-py computes from the stored blocks, so the JSON's
    xxh3 is pinned by an oracle outside llmc; 0xFF scales give 240 · E, 0x7F ones 0."""
    gguf = pytest.importorskip("gguf")
    from llmc_format.decode import read_native_blocks

    path = VECTORS / "v1-ggml-scales.llmc"
    expected = json.loads((VECTORS / "v1-ggml-scales.json").read_text())["tensors"]
    with llmc_format.safe_open(path) as f:
        reader = f._reader
        nv = np.frombuffer(read_native_blocks(reader, "nvfp4.all_scales"), np.uint8)
        k8 = np.frombuffer(read_native_blocks(reader, "q8_k"), np.uint8).reshape(-1, 292)
        refs = {  # gguf-py has no Q8_K dequantizer: d (binary32) times the int8 quants
            "nvfp4.all_scales": np.asarray(gguf.quants.dequantize(
                nv.reshape(4, -1), gguf.GGMLQuantizationType.NVFP4), np.float32),
            "q8_k": k8[:, :4].copy().view("<f4") * k8[:, 4:260].view(np.int8).astype(np.float32)}
        for name, ref in refs.items():
            assert tensor_digest(ref) == expected[name]["xxh3"], name
            assert f.get_tensor(name).tobytes() == ref.tobytes()
        scales = nv.reshape(-1, 36)[:, :4].reshape(-1)
        values = f.get_tensor("nvfp4.all_scales").reshape(-1, 16)
        assert sorted(scales.tolist()) == list(range(256))
        assert not values[scales == 0x7F].any()
        g = int(np.flatnonzero(scales == 0xFF)[0])  # group g % 4 of block g // 4
        qs = nv.reshape(-1, 36)[g // 4, 4 + 8 * (g % 4): 12 + 8 * (g % 4)]
        nib = np.concatenate([qs & 15, qs >> 4])
        e = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], np.float32)
        assert np.array_equal(values[g], np.float32(240) * e[nib])
        assert f.get_tensor("f32.rows_of_nothing").shape == (3, 0)
        assert f.get_slice("f32.rows_of_nothing")[1:3].shape == (2, 0)
