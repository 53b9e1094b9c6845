"""MiniLM-L6 end to end: pack -> unpack -> transformers (AutoModel + AutoTokenizer, offline).

Lossless archives must give *exactly* the original embeddings, whatever route (unpacked
safetensors, shards, pt, or straight from the archive). Lossy (VVC) ones are compared by
cosine similarity of sentence embeddings to the original model's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import llmc_format

Run = Callable[..., Any]


def _unpack(llmc: Run, archive: Path, out: Path, *args: object) -> Path:
    r = llmc("unpack", archive, "-o", out, "-q", *args)
    assert r.exit_code == 0, r.output
    return out


def test_unpacked_directory_loads_and_embeds_exactly(
        minilm_exact: Path, minilm_dir: Path, tmp_path: Path, llmc: Run,
        load_dir: Callable, embed: Callable, minilm_reference: torch.Tensor) -> None:
    out = _unpack(llmc, minilm_exact, tmp_path / "out")
    visible = sorted(p.name for p in minilm_dir.iterdir() if not p.name.startswith("."))
    assert sorted(p.name for p in out.iterdir()) == visible  # hidden files are not attachments
    model, tok = load_dir(out)
    got = embed(model, tok)
    assert torch.equal(got, minilm_reference)
    ref_tok = load_dir(minilm_dir)[1]
    assert tok("Hello world, llmc!")["input_ids"] == ref_tok("Hello world, llmc!")["input_ids"]


def test_sharded_index_is_what_transformers_reads(
        minilm_exact: Path, tmp_path: Path, llmc: Run, load_dir: Callable, embed: Callable,
        minilm_reference: torch.Tensor) -> None:
    from safetensors import safe_open

    out = _unpack(llmc, minilm_exact, tmp_path / "out", "--shard-size", "20MB")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 4 and shards == sorted(p.name for p in out.glob("model-*.safetensors"))
    names, size = set(), 0
    for shard in shards:
        with safe_open(str(out / shard), "pt") as f:
            assert f.metadata()["format"] == "pt"
            data = sum(f.get_tensor(k).nbytes for k in f.keys())
            # at most 20 MB of tensor data, unless one tensor is larger by itself (46.9 MB
            # word embeddings), as save_pretrained(max_shard_size=...) does
            assert data <= 20e6 or len(f.keys()) == 1, shard
            for k in f.keys():
                assert index["weight_map"][k] == shard
                names.add(k)
            size += data
    assert names == set(index["weight_map"])
    assert index["metadata"] == {"total_parameters": 22713728, "total_size": size}
    assert torch.equal(embed(*load_dir(out)), minilm_reference)


def test_pt_format_loads_exactly(minilm_exact: Path, tmp_path: Path, llmc: Run,
                                 load_dir: Callable, embed: Callable,
                                 minilm_reference: torch.Tensor) -> None:
    out = _unpack(llmc, minilm_exact, tmp_path / "pt", "--format", "pt", "--shard-size", "30MB")
    assert (out / "pytorch_model.bin.index.json").exists()
    assert not list(out.glob("*.safetensors"))
    state = torch.load(out / "pytorch_model-00001-of-00004.bin", weights_only=True)
    assert state and all(isinstance(v, torch.Tensor) for v in state.values())
    assert torch.equal(embed(*load_dir(out)), minilm_reference)


def test_gguf_format_holds_every_tensor_bit_exactly(minilm_exact: Path, tmp_path: Path,
                                                    llmc: Run) -> None:
    gguf = pytest.importorskip("gguf")
    import ml_dtypes

    out = _unpack(llmc, minilm_exact, tmp_path / "gguf", "--format", "gguf", "--dtype", "bf16")
    reader = gguf.GGUFReader(str(out / "model.gguf"))
    fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    assert fields["general.architecture"] == "bert"
    assert fields["llmc.tensor_names"] == "huggingface"
    assert json.loads(fields["llmc.hf_config_json"])["model_type"] == "bert"
    ref = llmc_format.load_file(minilm_exact)
    assert [t.name for t in reader.tensors] == list(ref)
    for t in reader.tensors:
        want = ref[t.name]
        got = np.asarray(t.data)
        if want.dtype.kind == "f":
            want = want.astype(ml_dtypes.bfloat16)
            assert t.tensor_type.name == "BF16"
            got = got.view(ml_dtypes.bfloat16)
        assert got.shape == want.shape and got.tobytes() == want.tobytes(), t.name
    assert (out / "tokenizer.json").exists() and (out / "config.json").exists()


@pytest.mark.parametrize(("flag", "dtype"), [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_dtype_cast_loads_in_that_dtype(flag: str, dtype: torch.dtype, minilm_exact: Path,
                                        tmp_path: Path, llmc: Run, load_dir: Callable,
                                        embed: Callable, minilm_reference: torch.Tensor) -> None:
    from safetensors import safe_open

    out = _unpack(llmc, minilm_exact, tmp_path / flag, "--dtype", flag)
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        kinds = {k: f.get_slice(k).get_dtype() for k in f.keys()}
    assert kinds.pop("embeddings.position_ids") == "I64"  # integers are never cast
    assert set(kinds.values()) == {"BF16" if flag == "bf16" else "F16"}
    model, tok = load_dir(out)
    assert model.dtype == dtype
    cos = torch.nn.functional.cosine_similarity(embed(model, tok), minilm_reference)
    assert cos.min() > 0.999, cos  # measured min: bf16 0.99994, fp16 0.999999


def test_from_pretrained_builds_the_model_from_the_archive(
        minilm_exact: Path, embed: Callable, minilm_reference: torch.Tensor) -> None:
    from transformers import AutoModel, BertModel

    from llmc_format.transformers import from_pretrained, load_tokenizer

    model = from_pretrained(minilm_exact)
    assert type(model) is BertModel and not model.training
    tok = load_tokenizer(minilm_exact)
    assert torch.equal(embed(model, tok), minilm_reference)
    half = from_pretrained(minilm_exact, AutoModel, dtype=torch.bfloat16)
    assert type(half) is BertModel and half.dtype == torch.bfloat16


def test_non_empty_output_needs_force(minilm_exact: Path, tmp_path: Path, llmc: Run) -> None:
    out = tmp_path / "out"
    _unpack(llmc, minilm_exact, out, "--format", "pt")
    (out / "notes.txt").write_text("mine")
    r = llmc("unpack", minilm_exact, "-o", out, "-q")
    assert r.exit_code == 3
    assert "non-empty directory" in r.output and "--force" in r.output
    assert (out / "pytorch_model.bin").exists()
    _unpack(llmc, minilm_exact, out, "--force")
    # a stale checkpoint of another format is removed (transformers would prefer
    # safetensors over .bin, the reverse stale case would shadow the fresh files)
    assert not (out / "pytorch_model.bin").exists() and (out / "model.safetensors").exists()
    assert (out / "notes.txt").read_text() == "mine"
    file = tmp_path / "f"
    file.write_text("x")
    assert llmc("unpack", minilm_exact, "-o", file, "-q", "--force").exit_code == 3


def test_bad_options_are_usage_errors(minilm_exact: Path, tmp_path: Path, llmc: Run) -> None:
    for args in (["--format", "onnx"], ["--dtype", "int8"], ["--tied", "maybe"],
                 ["--shard-size", "lots"], ["--format", "gguf", "--shard-size", "1GB"]):
        r = llmc("unpack", minilm_exact, "-o", tmp_path / "o", *args)
        assert r.exit_code == 2, (args, r.output)
    assert not (tmp_path / "o").exists()


def test_cli_summary_names_files(minilm_exact: Path, tmp_path: Path, llmc: Run) -> None:
    r = llmc("unpack", minilm_exact, "-o", tmp_path / "o", "--shard-size", "30MB")
    assert r.exit_code == 0, r.output
    assert "4 shards + model.safetensors.index.json" in r.output and "11 attachments" in r.output


def test_python_api_mirrors_the_cli(minilm_dir: Path, tmp_path: Path) -> None:
    archive = llmc_format.pack(minilm_dir, tmp_path / "m.llmc", codec="vvc", lossless=["*"], jobs=1)
    result = llmc_format.unpack(archive, tmp_path / "out", format="pt", dtype="fp16",
                                shard_size="30MB")
    assert result.format == "pt" and Path(result) == tmp_path / "out"
    assert result.files[-1] == "pytorch_model.bin.index.json" and len(result.files) == 3
    assert "config.json" in result.attachments
    summary = llmc_format.inspect(archive)["summary"]
    assert summary["tensors"] == 104 and summary["lossy_tensors"] == 0
    assert llmc_format.verify(archive).ok
    with llmc_format.safe_open(archive, framework="pt") as f:
        sl = f.get_slice("embeddings.word_embeddings.weight")
        whole = sl[...]
        assert isinstance(whole, torch.Tensor) and tuple(whole.shape) == (30522, 384)
        assert torch.equal(sl[10:20], whole[10:20])
    np_tensors = llmc_format.load_file(archive)
    assert np_tensors["embeddings.word_embeddings.weight"].dtype == np.float32


def _layer0_lossy(llmc: Run, src: Path, archive: Path) -> None:
    # The FFN output projection keeps outlier weights (max |w| 7.9): per-row min-max at QP 30
    # gives it only 14.2 dB and the embeddings' cosine drops to 0.70, so it stays exact here
    # (the 5 other matrices: 19-20 dB). Scaling for outliers is the VVC-tuning issue's work.
    r = llmc("pack", src, "-o", archive, "-q", "--codec", "vvc", "--qp", "30",
             "--lossless", "embeddings.*", "--lossless", "pooler.*",
             "--lossless", "encoder.layer.[1-5].*", "--lossless", "encoder.layer.?.output.dense.*")
    assert r.exit_code == 0, r.output


def test_lossy_vvc_layer0_unpacks_and_loads(
        vvc_codec: None, minilm_dir: Path, tmp_path: Path, llmc: Run, load_dir: Callable, embed: Callable,
        minilm_reference: torch.Tensor) -> None:
    """Layer 0's matrices through VVC at QP 30 (fast); the full model is the slow test below."""
    from llmc_format.transformers import from_pretrained, load_tokenizer

    archive = tmp_path / "l0.llmc"
    _layer0_lossy(llmc, minilm_dir, archive)
    lossy = [t for t in llmc_format.inspect(archive)["tensors"] if t["codec"] != "exact"]
    assert lossy and all(t["name"].startswith("encoder.layer.0.") for t in lossy)
    out = _unpack(llmc, archive, tmp_path / "out")
    got = embed(*load_dir(out))
    assert not torch.equal(got, minilm_reference)
    cos = torch.nn.functional.cosine_similarity(got, minilm_reference)
    assert cos.min() > 0.99, cos  # measured min 0.9980 with 4 lossy matrices (19.9-20.0 dB)
    direct = embed(from_pretrained(archive), load_tokenizer(archive))
    assert torch.equal(direct, got)  # both routes decode the same bits


@pytest.mark.slow
def test_lossy_vvc_whole_model_tolerance(
        vvc_codec: None, minilm_dir: Path, tmp_path: Path, llmc: Run, load_dir: Callable, embed: Callable,
        minilm_reference: torch.Tensor) -> None:
    """Default lossy policy (26 matrices incl. position embeddings) at QP 30: ~40 s to pack."""
    archive = tmp_path / "vvc.llmc"
    r = llmc("pack", minilm_dir, "-o", archive, "-q", "--codec", "vvc", "--qp", "30",
             "--lossless", "encoder.layer.?.output.dense.*")  # outliers: see _layer0_lossy
    assert r.exit_code == 0, r.output
    out = _unpack(llmc, archive, tmp_path / "out")
    cos = torch.nn.functional.cosine_similarity(embed(*load_dir(out)), minilm_reference)
    assert cos.min() > 0.94, cos  # measured 0.954..0.965 (SNR 16.8..20.3 dB per matrix)


def test_save_file_takes_the_pack_targets(vvc_codec: None, tmp_path: Path) -> None:
    """``save_file(..., snr=...)`` runs the RD target search as ``llmc pack --snr`` does."""
    rng = np.random.default_rng(0)
    path = llmc_format.save_file({"w": rng.standard_normal((256, 512)).astype(np.float32)},
                                 tmp_path / "w.llmc", codec="vvc", snr=15.0)
    (entry,) = llmc_format.inspect(path)["tensors"]
    assert entry["codec"] == "blockdct+vvc" and entry["snr_db"] >= 15.0 * 0.98  # the target default
    with llmc_format.safe_open(path) as f:
        assert f.metadata()["policy"]["codec"] == "vvc"


def test_damaged_archive_fails_cleanly_both_routes(minilm_exact: Path, tmp_path: Path,
                                                   llmc: Run) -> None:
    from llmc_format.errors import ChecksumError
    from llmc_format.transformers import from_pretrained

    damaged = tmp_path / "damaged.llmc"
    data = bytearray(minilm_exact.read_bytes())
    data[30_000_000] ^= 0x10  # inside the word embeddings' blobs
    damaged.write_bytes(bytes(data))
    r = llmc("unpack", damaged, "-o", tmp_path / "out", "-q")
    assert r.exit_code == 3 and "checksum mismatch" in r.output
    assert "embeddings.word_embeddings.weight" in r.output
    assert not [p for p in (tmp_path / "out").glob("*") if "safetensors" in p.name]
    with pytest.raises(ChecksumError, match=r"embeddings\.word_embeddings\.weight"):
        from_pretrained(damaged)


def test_from_pretrained_needs_a_config(tmp_path: Path) -> None:
    from llmc_format.errors import SourceError
    from llmc_format.transformers import from_pretrained

    path = llmc_format.save_file({"w": np.zeros((2, 2), np.float32)}, tmp_path / "bare.llmc")
    with pytest.raises(SourceError, match=r"no config.json attachment"):
        from_pretrained(path)
