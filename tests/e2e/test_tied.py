"""Tied weights end to end, on a tiny random Llama saved as a torch checkpoint.

A torch checkpoint of a tied model holds ``lm_head.weight`` and
``model.embed_tokens.weight`` sharing one storage; the archive stores it once and records
``lm_head.weight`` as an alias. What unpack writes for the alias (``--tied``), and whether
transformers then rebuilds the same model, is what is tested here; the model is tiny so
the whole file runs in seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import llmc_format
from llmc_format.container.reader import Reader

Run = Callable[..., Any]
PROMPT = torch.tensor([[1, 5, 9, 42, 77, 3, 100, 12]])


def _tiny_llama(out: Path, *, tie: bool, share_anyway: bool = False) -> torch.Tensor:
    """Save a tiny Llama (config + pytorch_model.bin) to ``out``; return its logits on PROMPT.

    ``share_anyway``: an untied config whose checkpoint still shares the two tensors (a
    model tied at run time): transformers will not re-tie it, so the alias must be written.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         tie_word_embeddings=tie)
    model = LlamaForCausalLM(config).eval()
    if share_anyway:
        model.lm_head.weight = model.model.embed_tokens.weight
    out.mkdir(parents=True)
    config.save_pretrained(out)
    state = model.state_dict()
    assert state["lm_head.weight"].data_ptr() == state["model.embed_tokens.weight"].data_ptr()
    torch.save(state, out / "pytorch_model.bin")
    with torch.no_grad():
        return model(PROMPT).logits


def _logits(model: Any) -> torch.Tensor:
    with torch.no_grad():
        return model(PROMPT).logits


def _load(path: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True).eval()


def _keys(path: Path) -> set[str]:
    from safetensors import safe_open

    with safe_open(str(path / "model.safetensors"), "pt") as f:
        return set(f.keys())


def _tied(model: Any) -> bool:
    return model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


@pytest.fixture(scope="module")
def tied_archive(tmp_path_factory: pytest.TempPathFactory, llmc: Run) -> tuple[Path, torch.Tensor]:
    d = tmp_path_factory.mktemp("tied")
    logits = _tiny_llama(d / "src", tie=True)
    r = llmc("pack", d / "src", "-o", d / "m.llmc", "-q")
    assert r.exit_code == 0, r.output
    return d / "m.llmc", logits


@pytest.fixture(scope="module")
def shared_untied_archive(tmp_path_factory: pytest.TempPathFactory,
                          llmc: Run) -> tuple[Path, torch.Tensor]:
    d = tmp_path_factory.mktemp("untied")
    logits = _tiny_llama(d / "src", tie=False, share_anyway=True)
    r = llmc("pack", d / "src", "-o", d / "m.llmc", "-q")
    assert r.exit_code == 0, r.output
    return d / "m.llmc", logits


def test_archive_stores_tied_tensor_once(tied_archive: tuple[Path, torch.Tensor]) -> None:
    archive, _ = tied_archive
    with llmc_format.safe_open(archive) as f:
        assert f.info("lm_head.weight")["alias_of"] == "model.embed_tokens.weight"
        assert (f.get_tensor("lm_head.weight") == f.get_tensor("model.embed_tokens.weight")).all()


def test_auto_leaves_out_what_transformers_reties(tied_archive: tuple[Path, torch.Tensor],
                                                   tmp_path: Path, llmc: Run) -> None:
    archive, logits = tied_archive
    r = llmc("unpack", archive, "-o", tmp_path / "out")
    assert r.exit_code == 0, r.output
    assert "tied weights left out: lm_head.weight (= model.embed_tokens.weight)" in r.output
    keys = _keys(tmp_path / "out")
    assert "model.embed_tokens.weight" in keys and "lm_head.weight" not in keys
    model = _load(tmp_path / "out")
    assert _tied(model)
    assert torch.equal(_logits(model), logits)


def test_copy_writes_the_alias_and_still_loads_tied(tied_archive: tuple[Path, torch.Tensor],
                                                    tmp_path: Path, llmc: Run) -> None:
    from safetensors.torch import load_file

    archive, logits = tied_archive
    assert llmc("unpack", archive, "-o", tmp_path / "out", "-q", "--tied", "copy").exit_code == 0
    state = load_file(tmp_path / "out" / "model.safetensors")
    assert torch.equal(state["lm_head.weight"], state["model.embed_tokens.weight"])
    model = _load(tmp_path / "out")
    assert _tied(model) and torch.equal(_logits(model), logits)


def test_pt_shares_storage_like_a_torch_checkpoint(tied_archive: tuple[Path, torch.Tensor],
                                                   tmp_path: Path, llmc: Run) -> None:
    archive, logits = tied_archive
    r = llmc("unpack", archive, "-o", tmp_path / "out", "-q", "--format", "pt", "--tied", "copy")
    assert r.exit_code == 0, r.output
    state = torch.load(tmp_path / "out" / "pytorch_model.bin", weights_only=True)
    assert state["lm_head.weight"].data_ptr() == state["model.embed_tokens.weight"].data_ptr()
    embed_bytes = state["model.embed_tokens.weight"].nbytes
    total = sum(t.nbytes for k, t in state.items() if k != "lm_head.weight")
    assert (tmp_path / "out" / "pytorch_model.bin").stat().st_size < total + embed_bytes // 2
    assert torch.equal(_logits(_load(tmp_path / "out")), logits)


def test_alias_transformers_would_not_retie_is_written(
        shared_untied_archive: tuple[Path, torch.Tensor], tmp_path: Path, llmc: Run) -> None:
    archive, logits = shared_untied_archive
    r = llmc("unpack", archive, "-o", tmp_path / "out")
    assert r.exit_code == 0, r.output
    assert "left out" not in r.output
    assert "lm_head.weight" in _keys(tmp_path / "out")
    model = _load(tmp_path / "out")
    assert not _tied(model)  # the config says untied: two parameters, equal values
    assert torch.equal(_logits(model), logits)
    assert llmc("unpack", archive, "-o", tmp_path / "drop", "-q", "--tied", "drop").exit_code == 0
    assert "lm_head.weight" not in _keys(tmp_path / "drop")


def test_without_config_every_alias_is_written(tied_archive: tuple[Path, torch.Tensor],
                                               tmp_path: Path) -> None:
    archive, _ = tied_archive
    bare = tmp_path / "bare.llmc"
    with llmc_format.safe_open(archive, "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys() if k != "lm_head.weight"}
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"]
    llmc_format.save_file(tensors, bare)
    result = llmc_format.unpack(bare, tmp_path / "out")
    assert result.tied_dropped == {}
    assert "lm_head.weight" in _keys(tmp_path / "out")


def test_gguf_follows_the_same_rule(tied_archive: tuple[Path, torch.Tensor], tmp_path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    archive, _ = tied_archive
    auto = llmc_format.unpack(archive, tmp_path / "auto", format="gguf")
    assert auto.tied_dropped == {"lm_head.weight": "model.embed_tokens.weight"}
    names = [t.name for t in gguf.GGUFReader(str(tmp_path / "auto" / "model.gguf")).tensors]
    assert "lm_head.weight" not in names
    llmc_format.unpack(archive, tmp_path / "copy", format="gguf", tied="copy")
    reader = gguf.GGUFReader(str(tmp_path / "copy" / "model.gguf"))
    data = {t.name: t.data for t in reader.tensors}
    assert (data["lm_head.weight"] == data["model.embed_tokens.weight"]).all()


@pytest.mark.parametrize("which", ["tied", "untied"])
def test_from_pretrained_straight_from_the_archive(
        which: str, tied_archive: tuple[Path, torch.Tensor],
        shared_untied_archive: tuple[Path, torch.Tensor]) -> None:
    from transformers import LlamaForCausalLM

    from llmc_format.transformers import from_pretrained

    archive, logits = tied_archive if which == "tied" else shared_untied_archive
    model = from_pretrained(archive)
    assert type(model) is LlamaForCausalLM
    assert _tied(model) == (which == "tied")
    assert torch.equal(_logits(model), logits)


def test_pack_records_what_transformers_reties(
        tied_archive: tuple[Path, torch.Tensor],
        shared_untied_archive: tuple[Path, torch.Tensor]) -> None:
    import transformers

    from llmc_format.container.layout import checksum

    with Reader(tied_archive[0]) as r:
        tied = r.metadata["tied"]
        assert tied["retied"] == ["lm_head.weight"]
        assert tied["config_checksum"] == checksum(r.read_attachment("config.json"))
        assert tied["by"] == f"transformers {transformers.__version__}"
    with Reader(shared_untied_archive[0]) as r:
        assert r.metadata["tied"]["retied"] == []  # untied config: nothing may be left out


def test_unpack_uses_the_record_without_importing_transformers(
        tied_archive: tuple[Path, torch.Tensor], tmp_path: Path) -> None:
    import subprocess
    import sys

    archive, _ = tied_archive
    code = ("import sys, llmc_format\n"
            f"r = llmc_format.unpack({str(archive)!r}, {str(tmp_path / 'out')!r})\n"
            "assert r.tied_dropped == {'lm_head.weight': 'model.embed_tokens.weight'}, r\n"
            "assert 'recorded at pack time' in r.tied_reason, r.tied_reason\n"
            "print(sorted(m for m in ('transformers', 'torch') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert "lm_head.weight" not in _keys(tmp_path / "out")


def test_a_record_for_another_config_is_ignored(tied_archive: tuple[Path, torch.Tensor],
                                                tmp_path: Path) -> None:
    import shutil

    from llmc_format.container.writer import append_metadata_update

    lying = tmp_path / "lying.llmc"
    shutil.copy(tied_archive[0], lying)
    with Reader(lying) as r:
        metadata = dict(r.metadata)
    # says nothing is re-tied, but for a different config.json: transformers decides
    metadata["tied"] = {**metadata["tied"], "retied": [], "config_checksum": 1}
    append_metadata_update(lying, metadata=metadata)
    result = llmc_format.unpack(lying, tmp_path / "out")
    assert result.tied_dropped == {"lm_head.weight": "model.embed_tokens.weight"}
    assert "recorded" not in result.tied_reason
