"""Rules FORMAT.md revision 1.1 settled, each as the reader enforces it: closed stored
configs without defaults, required digests, bare aliases, attachment names and lengths at
open, the zstd window bound, lowercase frame hashes, the appended-index chain."""

from __future__ import annotations

import shutil
from pathlib import Path

import msgpack
import numpy as np
import pytest

import llmc_format
from llmc_format import errors
from llmc_format.container import layout
from llmc_format.container.reader import Reader
from llmc_format.container.writer import append_metadata_update

VECTORS = Path(__file__).resolve().parents[2] / "spec" / "vectors"


def _entry(obj: dict, name: str) -> dict:
    return next(t for t in obj["tensors"] if t["name"] == name)


def _copy(tmp_path: Path, vector: str) -> Path:
    path = tmp_path / f"{vector}.llmc"
    shutil.copy(VECTORS / f"{vector}.llmc", path)
    return path


def _decode_kind(path: Path, name: str) -> str:
    """Open succeeds; decoding ``name`` fails with the returned kind; the others read."""
    with llmc_format.safe_open(path) as f:
        with pytest.raises(errors.LlmcError) as info:
            f.get_tensor(name)
        for other in f.keys():
            if other != name:
                f.get_tensor(other)
    return info.value.kind


def _open_kind(path: Path) -> str:
    with pytest.raises(errors.LlmcError) as info:
        Reader(path).close()
    return info.value.kind


@pytest.mark.parametrize(("stage", "change"), [
    (0, lambda c: c.pop("clip")),                 # affine: no default is substituted
    (0, lambda c: c.pop("bits")),
    (1, lambda c: c.pop("encoder")),              # vvc: no default encoder either
    (1, lambda c: c.pop("qp")),
    (1, lambda c: c.update(threads=2)),           # a runtime knob is not a stored key
    (1, lambda c: c.update(frame_hashes=[h.upper() for h in c["frame_hashes"]])),
    (1, lambda c: c.update(encoder_version=None)),  # an optional key present is typed
    (1, lambda c: c.update(ffmpeg_version=5)),
    (1, lambda c: c.update(vvenc_params=None)),
])
def test_lossy_config_rules_are_decode_errors(tmp_path: Path, rewrite_index, stage: int, change) -> None:
    path = _copy(tmp_path, "v1-lossy-vvc")
    rewrite_index(path, lambda o: change(_entry(o, "mlp.weight")["pipeline"][stage]))
    assert _decode_kind(path, "mlp.weight") == "Decode"


def test_optional_keys_may_be_absent(tmp_path: Path, rewrite_index) -> None:
    """Provenance strings and vvenc_params are optional: the tensor still decodes."""
    path = _copy(tmp_path, "v1-lossy-vvc")
    rewrite_index(path, lambda o: [_entry(o, "mlp.weight")["pipeline"][1].pop(k)
                              for k in ("encoder_version", "ffmpeg_version")])
    with llmc_format.safe_open(path) as f:
        assert f.get_tensor("mlp.weight").shape == (256, 192)


def test_exact_config_needs_chunk_elems(tmp_path: Path, rewrite_index) -> None:
    path = _copy(tmp_path, "v1-exact-basic")
    rewrite_index(path, lambda o: _entry(o, "q.i8")["pipeline"][0].pop("chunk_elems"))
    assert _decode_kind(path, "q.i8") == "Decode"


def test_unknown_codec_is_reported_at_decode(tmp_path: Path, rewrite_index) -> None:
    path = _copy(tmp_path, "v1-exact-basic")
    rewrite_index(path, lambda o: _entry(o, "q.i8")["pipeline"][0].update(id="zfp"))
    assert _decode_kind(path, "q.i8") == "UnsupportedCodec"


@pytest.mark.parametrize("change", [
    lambda t: t.pop("digest"),
    lambda t: t["digest"].pop("source"),
    lambda t: t["digest"].update(source=-1),
    lambda t: t["digest"].update(decoded="0"),
])
def test_digest_is_required_of_stored_tensors(tmp_path: Path, rewrite_index, change) -> None:
    path = _copy(tmp_path, "v1-exact-basic")
    rewrite_index(path, lambda o: change(_entry(o, "q.i8")))
    assert _open_kind(path) == "Malformed"


def test_a_missing_decoded_digest_is_accepted_and_not_checked(tmp_path: Path,
                                                              rewrite_index) -> None:
    """Writers write it; a file of revision 1.0 without it (v1-ggml) still reads."""
    path = _copy(tmp_path, "v1-exact-basic")
    rewrite_index(path, lambda o: _entry(o, "q.i8")["digest"].pop("decoded"))
    with llmc_format.safe_open(path) as f:
        assert f.get_tensor("q.i8").shape == (16, 16)


def test_alias_entries_are_bare(tmp_path: Path, rewrite_index) -> None:
    path = _copy(tmp_path, "v1-exact-basic")
    alias = {"name": "tied", "dtype": "int8", "shape": [16, 16], "alias_of": "q.i8"}
    rewrite_index(path, lambda o: o["tensors"].append(dict(alias)))
    with llmc_format.safe_open(path) as f:  # a bare alias reads as its target
        assert f.get_tensor("tied").tobytes() == f.get_tensor("q.i8").tobytes()
    for extra in ({"pipeline": [{"id": "exact", "layout": 1, "chunk_elems": 256}]},
                  {"blobs": []}, {"digest": {"source": 0, "decoded": 0}}):
        path = _copy(tmp_path, "v1-exact-basic")
        rewrite_index(path, lambda o, extra=extra: o["tensors"].append({**alias, **extra}))
        assert _open_kind(path) == "Malformed"


@pytest.mark.parametrize("name", ["../evil", "/abs", "a//b", "./x", "a\\b", "c:x", "a/"])
def test_attachment_names_are_checked_at_open(tmp_path: Path, name: str) -> None:
    path = tmp_path / "att.llmc"
    llmc_format.save_file({"t": np.ones(2, np.float32)}, path)
    _rewrite_attachment(path, name=name)
    assert _open_kind(path) == "Malformed"


def _rewrite_attachment(path: Path, **fields: object) -> None:
    """Give the archive one raw attachment b'hello' (appending its blob) with ``fields``."""
    data = path.read_bytes()
    f = layout.Footer.unpack(data[-48:], len(data) - 48)
    obj = msgpack.unpackb(data[f.index_offset: f.index_offset + f.index_length])
    at = f.index_offset
    blob = b"hello"
    end = layout.align_up(at + len(blob), 64)
    att = {"name": "ok.txt", "size": len(blob), "encoding": "raw",
           "blob": {"stage": 0, "offset": at, "length": len(blob),
                    "checksum": layout.checksum(blob)}, **fields}
    obj["attachments"] = [att]
    obj["data_end"] = end
    raw = msgpack.packb(obj, use_bin_type=True)
    path.write_bytes(data[:at] + blob.ljust(end - at, b"\0") + raw
                     + layout.Footer(end, len(raw), layout.checksum(raw)).pack())


def test_the_attachment_helper_makes_a_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "att.llmc"
    llmc_format.save_file({"t": np.ones(2, np.float32)}, path)
    _rewrite_attachment(path)
    with llmc_format.safe_open(path) as f:
        assert f.read_attachment("ok.txt") == b"hello"
    assert llmc_format.verify(path).ok


def test_raw_attachment_length_is_its_size(tmp_path: Path) -> None:
    path = tmp_path / "att.llmc"
    llmc_format.save_file({"t": np.ones(2, np.float32)}, path)
    _rewrite_attachment(path, size=4)
    assert _open_kind(path) == "Malformed"


def test_zstd_window_beyond_the_bound_is_a_decode_error(tmp_path: Path, rewrite_index) -> None:
    """A plane frame that would decode, but declares a 4 MiB window for 300,000 bytes."""
    path = tmp_path / "w.llmc"
    rng = np.random.default_rng(0)
    llmc_format.save_file({"u": rng.integers(0, 4, 300_000, dtype=np.uint8)}, path)
    data = bytearray(path.read_bytes())
    with Reader(path) as r:
        ref = r.tensor("u").blobs[0]
    frame = ref.offset + 1 + 5  # uint8: one plane; its zstd frame follows the header
    assert bytes(data[frame:frame + 4]) == bytes.fromhex("28b52ffd")  # zstd magic
    assert data[frame + 4] & 0x20 == 0  # Frame_Header_Descriptor: not single-segment
    assert data[frame + 5] == (17 - 10) << 3  # Window_Descriptor of a 128 KiB window
    data[frame + 5] = (22 - 10) << 3
    blob = bytes(data[ref.offset: ref.offset + ref.length])
    path.write_bytes(bytes(data))
    rewrite_index(path, lambda o: _entry(o, "u")["blobs"][0].update(checksum=layout.checksum(blob)))
    with llmc_format.safe_open(path) as f, pytest.raises(errors.CodecError, match="window"):
        f.get_tensor("u")


def test_update_chain_padding_must_end_at_the_next_record(tmp_path: Path) -> None:
    """A superseded record followed by more zero bytes than the alignment needs."""
    path = tmp_path / "u.llmc"
    llmc_format.save_file({"t": np.ones(3, np.float32)}, path)
    append_metadata_update(path, metadata={"user": {"n": 1}})
    assert llmc_format.verify(path).ok
    data = path.read_bytes()
    f = layout.Footer.unpack(data[-48:], len(data) - 48)
    index = data[f.index_offset: f.index_offset + f.index_length]
    shifted = f.index_offset + 64  # one more aligned block of zeros before the index
    obj = msgpack.unpackb(index)
    raw = msgpack.packb(obj, use_bin_type=True)
    path.write_bytes(data[: f.index_offset] + b"\0" * 64 + raw
                     + layout.Footer(shifted, len(raw), layout.checksum(raw)).pack())
    report = llmc_format.verify(path)
    assert not report.ok
    assert any("zero padding" in p for p in report.file_problems)


def test_stages_are_checked_in_order_id_before_config(tmp_path: Path, rewrite_index) -> None:
    """Stage 0's broken config is reported before stage 1's unknown id (FORMAT.md §7)."""
    path = _copy(tmp_path, "v1-lossy-vvc")

    def both(o: dict) -> None:
        pipeline = _entry(o, "mlp.weight")["pipeline"]
        pipeline[0].pop("clip")
        pipeline[1]["id"] = "vvc2"

    rewrite_index(path, both)
    assert _decode_kind(path, "mlp.weight") == "Decode"
    path = _copy(tmp_path, "v1-lossy-vvc")
    rewrite_index(path, lambda o: _entry(o, "mlp.weight")["pipeline"][1].update(id="vvc2"))
    assert _decode_kind(path, "mlp.weight") == "UnsupportedCodec"


def _damage_blob(path: Path, name: str, stage: int, i: int = 0) -> None:
    """Flip one byte of blob ``i`` of ``stage`` of tensor ``name``: its checksum fails."""
    with Reader(path) as r:
        ref = r.resolve(name).stage_blobs(stage)[i]
    with open(path, "r+b") as f:
        f.seek(ref.offset)
        byte = f.read(1)
        f.seek(ref.offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_an_empty_row_range_reads_no_row_blob_even_through_rowperm(tmp_path: Path) -> None:
    """FORMAT.md §7 "What a row range reads" (revision 1.7): an empty range needs an
    empty range of every next stage; ``rowperm``'s widening formula [⌊a/2D⌋·2D, ⌈b/2D⌉·2D)
    is for a < b only (it read a whole head group, and so a damaged blob, for [1, 1))."""
    from llmc_format.decode import read_tensor

    path = _copy(tmp_path, "v1-gguf")
    name = "blk.0.attn_q.weight"  # [rowperm, ggml], 4 rows, 2·D = 2
    _damage_blob(path, name, stage=1)
    with Reader(path) as r:
        assert [s["id"] for s in r.resolve(name).pipeline] == ["rowperm", "ggml"]
        for a in range(5):
            assert read_tensor(r, name, (a, a)).shape == (0, 256)
        with pytest.raises(errors.LlmcError) as info:
            read_tensor(r, name, (1, 2))
        assert info.value.kind == "Checksum"


def test_parameter_blobs_are_read_for_every_range_the_empty_one_included(tmp_path: Path) -> None:
    """§7 (revision 1.7): blobs a stage uses whole (``affine``'s parameters) are read and
    checked for any range, also an empty one."""
    from llmc_format.decode import read_tensor

    path = _copy(tmp_path, "v1-lossy-vvc")
    _damage_blob(path, "mlp.weight", stage=0)
    with Reader(path) as r:
        with pytest.raises(errors.LlmcError) as info:
            read_tensor(r, "mlp.weight", (3, 3))
        assert info.value.kind == "Checksum"


def test_a_range_of_all_rows_is_a_whole_decode_and_checks_the_digest(
        tmp_path: Path, rewrite_index) -> None:
    """§7 "Order of checks" item 6 (revision 1.7): rows [0, shape[0]) is whole, so
    ``digest.decoded`` is compared; a shorter range cannot be and is not."""
    from llmc_format.decode import read_tensor

    path = _copy(tmp_path, "v1-exact-basic")
    rewrite_index(path, lambda o: _entry(o, "q.i8")["digest"].update(
        decoded=_entry(o, "q.i8")["digest"]["decoded"] ^ 1))
    with Reader(path) as r:
        assert read_tensor(r, "q.i8", (0, 15)).shape == (15, 16)
        for rows in ((0, 16), None):
            with pytest.raises(errors.LlmcError) as info:
                read_tensor(r, "q.i8", rows)
            assert info.value.kind == "DigestMismatch"


def test_an_unknown_dtype_is_malformed_at_open(tmp_path: Path, rewrite_index) -> None:
    """§5.4 (revision 1.7): a schema error of §8 step 5, not a decode error."""
    path = _copy(tmp_path, "v1-exact-basic")
    rewrite_index(path, lambda o: _entry(o, "q.i8").update(dtype="int128"))
    assert _open_kind(path) == "Malformed"


def test_the_minor_version_is_not_checked(tmp_path: Path) -> None:
    """§3 (revision 1.7): a reader of major version 1 reads every minor version."""
    path = _copy(tmp_path, "v1-exact-basic")
    data = bytearray(path.read_bytes())
    data[10:12] = (7).to_bytes(2, "little")
    data[56:64] = layout.checksum(bytes(data[:56])).to_bytes(8, "little")
    path.write_bytes(bytes(data))
    with llmc_format.safe_open(path) as f:
        assert f.get_tensor("q.i8").shape == (16, 16)


def test_invalid_utf8_in_free_form_metadata_is_malformed(tmp_path: Path, rewrite_index) -> None:
    """§8 step 4 (revision 1.7): every str of the index is valid UTF-8, also one that no
    reader interprets (user metadata)."""
    path = _copy(tmp_path, "v1-exact-basic")
    rewrite_index(path, lambda o: o["metadata"].update(user={"note": "\u00e9\u00e9"}))
    data = path.read_bytes()
    f = layout.Footer.unpack(data[-48:], len(data) - 48)
    raw = data[f.index_offset:f.index_offset + f.index_length]
    assert raw.count("\u00e9\u00e9".encode()) == 1
    raw = raw.replace("\u00e9\u00e9".encode(), b"\xe9\xe9\xe9\xe9")  # same length, not UTF-8
    path.write_bytes(data[:f.index_offset] + raw
                     + layout.Footer(f.index_offset, len(raw), layout.checksum(raw)).pack())
    assert _open_kind(path) == "Malformed"


def test_a_rebuilt_gguf_tensor_is_checked_in_the_decode_order(tmp_path: Path, rewrite_index) -> None:
    """§7.8 (revision 1.7): a referenced tensor's blocks fail as its decode would, so the
    expansion bound (§7 "Order of checks" item 1) comes before a bad stage config (item 2);
    the reference reader checked the config first."""
    from llmc_format.decode import read_native_blocks, read_tensor

    path = _copy(tmp_path, "v1-gguf")
    name = "blk.0.attn_q.weight"

    def change(o: dict) -> None:
        t = _entry(o, name)
        t["shape"] = [4, 1 << 30]  # declares far more than its blobs can expand to
        t["pipeline"][-1].pop("fields")

    rewrite_index(path, change)
    with Reader(path) as r:
        for read in (read_tensor, read_native_blocks):
            with pytest.raises(errors.LlmcError) as info:
                read(r, name)
            assert info.value.kind == "Limit"
