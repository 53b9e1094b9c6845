"""Hugging Face directories: shard discovery, attachments, and the errors of broken ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from llmc_format.errors import SourceError
from llmc_format.io import open_source, write_attachments, write_safetensors
from llmc_format.io.safetensors_sink import INDEX_NAME

MINILM_ATTACHMENTS = [
    "1_Pooling/config.json", "README.md", "config.json", "config_sentence_transformers.json",
    "data_config.json", "modules.json", "sentence_bert_config.json", "special_tokens_map.json",
    "tokenizer.json", "tokenizer_config.json", "vocab.txt",
]


def test_minilm_directory_attachments(minilm_dir: Path) -> None:
    with open_source(minilm_dir) as src:
        items = list(src.attachments())
        facts = src.describe()
        n_tensors = len(src.specs())
    assert [rel for rel, _ in items] == MINILM_ATTACHMENTS
    assert dict(items)["1_Pooling/config.json"] == (minilm_dir / "1_Pooling/config.json").read_bytes()
    assert n_tensors == 104
    assert facts["format"] == "hf-safetensors"
    assert facts["attachments"] == MINILM_ATTACHMENTS
    assert str(minilm_dir.parent) not in repr(facts)


@pytest.fixture
def sharded_minilm(minilm_dir: Path, tmp_path: Path) -> Path:
    """MiniLM re-written as 4 MB shards next to its attachments, via our own sinks."""
    out = tmp_path / "sharded"
    with open_source(minilm_dir) as src:
        write_safetensors(((n, e()) for n, e in src.tensors()), out, shard_size=4 << 20)
        write_attachments(src.attachments(), out)
    return out


def test_sharded_directory_round_trips_bit_exactly(
    sharded_minilm: Path, minilm_file: Path, read_raw_safetensors
) -> None:
    oracle = read_raw_safetensors(minilm_file)
    shards = sorted(p.name for p in sharded_minilm.glob("model-*.safetensors"))
    assert len(shards) > 5
    with open_source(sharded_minilm) as src:
        facts = src.describe()
        got = {name: entry() for name, entry in src.tensors()}
        attachments = [rel for rel, _ in src.attachments()]
    assert facts["index"] == INDEX_NAME
    assert [f["name"] for f in facts["files"]] == shards
    assert attachments == MINILM_ATTACHMENTS  # the index and shards are not attachments
    assert sorted(got) == sorted(oracle)
    for name, arr in got.items():
        assert arr.tobytes() == oracle[name][2], name


def test_sharded_directory_loads_in_transformers(sharded_minilm: Path, minilm_dir: Path) -> None:
    """What we write is what transformers reads: same weights as the original directory."""
    transformers = pytest.importorskip("transformers")
    ours = transformers.AutoModel.from_pretrained(str(sharded_minilm)).state_dict()
    ref = transformers.AutoModel.from_pretrained(str(minilm_dir)).state_dict()
    assert ours.keys() == ref.keys()
    for k in ref:
        assert torch.equal(ours[k], ref[k]), k


def test_duplicate_names_across_shards_are_refused(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    save_file({"a": np.zeros(2, np.float32)}, str(tmp_path / "one.safetensors"))
    save_file({"a": np.ones(2, np.float32)}, str(tmp_path / "two.safetensors"))
    with pytest.raises(SourceError, match=r"'a'.*one\.safetensors.*two\.safetensors"):
        open_source(tmp_path)


def test_index_that_lies_is_refused(sharded_minilm: Path) -> None:
    index_path = sharded_minilm / INDEX_NAME
    index = json.loads(index_path.read_text())
    name = "pooler.dense.weight"
    wrong = next(f for f in sorted(set(index["weight_map"].values())) if f != index["weight_map"][name])
    index["weight_map"][name] = wrong
    index_path.write_text(json.dumps(index))
    with pytest.raises(SourceError, match=rf"{INDEX_NAME}.*'{name}'"):
        open_source(sharded_minilm)


def test_index_naming_a_missing_shard_is_refused(sharded_minilm: Path) -> None:
    victim = sorted(sharded_minilm.glob("model-*.safetensors"))[2]
    victim.unlink()
    with pytest.raises(SourceError, match=victim.name):
        open_source(sharded_minilm)


def test_directory_without_weights_is_refused(minilm_dir: Path, tmp_path: Path) -> None:
    shutil.copy(minilm_dir / "config.json", tmp_path / "config.json")
    with pytest.raises(SourceError, match="no weights"):
        open_source(tmp_path)


def test_pytorch_bin_directory_with_tied_weights(tmp_path: Path) -> None:
    emb = torch.randn(10, 4)
    state = {"embed.weight": emb, "norm.weight": torch.ones(4), "lm_head.weight": emb}
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "training_args.bin").write_bytes(b"not read")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "junk.json").write_text("{}")
    with open_source(tmp_path) as src:
        names = [name for name, _ in src.tensors()]
        aliases = src.aliases()
        attachments = [rel for rel, _ in src.attachments()]
        facts = src.describe()
        emb_back = dict(src.tensors())["embed.weight"]()
    assert names == ["embed.weight", "norm.weight"]
    assert aliases == {"lm_head.weight": "embed.weight"}
    assert attachments == ["config.json"]
    assert facts["format"] == "hf-torch"
    assert facts["skipped"] == ["training_args.bin"]
    assert emb_back.tobytes() == emb.numpy().tobytes()


def test_safetensors_win_over_pickles(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    save_file({"st": np.zeros(1, np.float32)}, str(tmp_path / "model.safetensors"))
    torch.save({"pt": torch.zeros(1)}, tmp_path / "pytorch_model.bin")
    with open_source(tmp_path) as src:
        assert [n for n, _ in src.tensors()] == ["st"]
        assert src.describe()["skipped"] == ["pytorch_model.bin"]


# --- symlinks: only files inside the directory (or a hub cache snapshot's blobs/) -------


def _tiny_dir(d: Path) -> Path:
    from safetensors.numpy import save_file

    d.mkdir(parents=True)
    save_file({"w": np.ones((2, 2), np.float32)}, d / "model.safetensors")
    (d / "config.json").write_text('{"model_type": "llama"}')
    return d


@pytest.mark.parametrize("what", ["attachment", "nested attachment", "weights"])
def test_symlink_out_of_the_directory_is_refused(tmp_path: Path, what: str) -> None:
    from typer.testing import CliRunner

    from llmc_format.cli import app

    secret = tmp_path / "secret.txt"
    secret.write_text("ssh-rsa AAAA... private")
    d = _tiny_dir(tmp_path / "model")
    if what == "attachment":
        (d / "notes.txt").symlink_to(secret)
    elif what == "nested attachment":
        (d / "sub").mkdir()
        (d / "sub" / "vocab.txt").symlink_to("../../secret.txt")
    else:
        outside = tmp_path / "elsewhere.safetensors"
        (d / "model.safetensors").rename(outside)
        (d / "model.safetensors").symlink_to(outside)
    with pytest.raises(SourceError, match="outside the model directory"):
        open_source(d)
    out = tmp_path / "out.llmc"
    r = CliRunner().invoke(app, ["pack", str(d), "-o", str(out), "-q"])
    assert r.exit_code == 3 and "outside the model directory" in r.output, r.output
    assert not out.exists()


def test_symlinks_inside_the_directory_are_followed(tmp_path: Path) -> None:
    d = _tiny_dir(tmp_path / "model")
    (d / "real").mkdir()
    (d / "real" / "tokenizer.json").write_text("{}")
    (d / "tokenizer.json").symlink_to("real/tokenizer.json")
    (d / "linked_dir").symlink_to(tmp_path)  # a directory link: never descended into
    with open_source(d) as src:
        names = [rel for rel, _ in src.attachments()]
    assert names == ["config.json", "real/tokenizer.json", "tokenizer.json"]


def test_hub_cache_snapshot_links_into_blobs_are_followed(tmp_path: Path) -> None:
    """``<repo>/snapshots/<rev>/*`` are symlinks to ``<repo>/blobs/<hash>``."""
    repo = tmp_path / "models--org--tiny"
    built = _tiny_dir(tmp_path / "built")
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    for f in built.iterdir():
        blob = repo / "blobs" / f"hash-{f.name}"
        f.rename(blob)
        (snap / f.name).symlink_to(Path("..") / ".." / "blobs" / blob.name)
    with open_source(snap) as src:
        assert [rel for rel, _ in src.attachments()] == ["config.json"]
        assert [name for name, _ in src.tensors()] == ["w"]


def test_source_name_is_the_directory_name_the_user_gave(tmp_path: Path, minilm_dir: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A symlinked model directory is named by the link (what the user typed, what docs show);
    "." by the directory it stands for (the process's working directory is the link's target)."""
    link = tmp_path / "my-minilm"
    link.symlink_to(minilm_dir, target_is_directory=True)
    with open_source(link) as src:
        assert src.describe()["name"] == "my-minilm"
    monkeypatch.chdir(link)
    with open_source(Path(".")) as src:
        assert src.describe()["name"] == minilm_dir.resolve().name
