"""Calibration sensitivities: mean squared loss gradient per tensor, on a tiny real Llama."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llmc_format.io import open_source
from llmc_format.rd.calibration import sensitivities


def test_sensitivities_are_mean_squared_gradients(tiny_model_dir: Path, lee_text: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    text = lee_text[:4000]
    names = {"model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight"}
    with open_source(tiny_model_dir) as src:
        s = sensitivities(src, text, sequences=1, seq_len=64, names=names)
    assert set(s) == names
    # the same quantity computed directly with the original model
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tok(text, return_tensors="pt")["input_ids"][0][:64][None]
    model(input_ids=ids, labels=ids).loss.backward()
    params = dict(model.named_parameters())
    for n in names:
        want = float(params[n].grad.double().pow(2).mean())
        assert s[n] == pytest.approx(want, rel=1e-4)
        assert s[n] > 0


def test_self_generated_calibration_is_reproducible(tiny_model_dir: Path) -> None:
    from llmc_format.rd.calibration import SELF

    names = {"model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight"}
    with open_source(tiny_model_dir) as src:
        a = sensitivities(src, SELF, sequences=2, seq_len=32, names=names)
        b = sensitivities(src, SELF, sequences=2, seq_len=32, names=names)
        c = sensitivities(src, SELF, sequences=2, seq_len=32, names=names, seed=1)
    assert a == b and a != c  # fixed seed: same samples, same weights (same archive)
    assert all(v > 0 for v in a.values())


def test_auto_weighting_self_calibrates_a_buildable_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    from llmc_format.io.memory import MemorySource
    from llmc_format.pipeline.policy import Policy
    from llmc_format.pipeline.target import Target, pack_to_target

    policy = Policy(codec="vvc", min_lossy_numel=1024, preset="faster")
    with open_source(tiny_model_dir) as src:
        rd = pack_to_target(src, tmp_path / "t.llmc", Target.parse(snr=10.0), policy=policy, jobs=2)
        tensors = {n: e() for n, e in src.tensors()}
    assert rd["weighting"] == "calibration-self (auto)"
    # no config.json: nothing to build, the data-free weighting says why
    rd = pack_to_target(MemorySource(tensors), tmp_path / "m.llmc", Target.parse(snr=10.0),
                        policy=policy, jobs=2)
    assert rd["weighting"].startswith("nmse (auto: no config.json")


def test_a_lossy_tensor_the_built_model_lacks_is_reported_first(tiny_model_dir: Path) -> None:
    from llmc_format.errors import SourceError

    with open_source(tiny_model_dir) as src, pytest.raises(SourceError, match=r"no parameter 'x\.weight'"):
        sensitivities(src, "self", names={"x.weight", "model.layers.0.mlp.up_proj.weight"})


def test_statistics_measure_input_moments_and_fisher_axes(tiny_model_dir: Path, lee_text: str) -> None:
    """E[x_j²] of each Linear's input and the Fisher row/column means, against a direct
    computation on the original model (one sequence, so the per-batch grad² is exact)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmc_format.rd.calibration import Statistics, statistics

    text = lee_text[:4000]
    names = {"model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight",
             "model.layers.0.input_layernorm.weight"}
    with open_source(tiny_model_dir) as src:
        st = statistics(src, text, sequences=1, seq_len=64, names=names)
    linear = names - {"model.layers.0.input_layernorm.weight"}
    assert set(st.sensitivity) == names and set(st.input_power) == linear  # a norm is no Linear
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tok(text, return_tensors="pt")["input_ids"][0][:64][None]
    seen: dict[str, torch.Tensor] = {}
    mods = dict(model.named_modules())
    hooks = [mods[n.removesuffix(".weight")].register_forward_pre_hook(
        lambda m, a, n=n: seen.__setitem__(n, a[0].detach().reshape(-1, a[0].shape[-1])))
        for n in linear]
    model(input_ids=ids, labels=ids).loss.backward()
    for h in hooks:
        h.remove()
    params = dict(model.named_parameters())
    for n in linear:
        want = seen[n].double().pow(2).mean(0).numpy()
        assert st.input_power[n].shape == (params[n].shape[1],)
        assert st.input_power[n] == pytest.approx(want, rel=1e-4)
        g2 = params[n].grad.double().pow(2)
        assert st.fisher_cols[n] == pytest.approx(g2.mean(0).numpy(), rel=1e-4)
        assert st.fisher_rows[n] == pytest.approx(g2.mean(1).numpy(), rel=1e-4)
        assert st.fisher_cols[n].mean() == pytest.approx(st.sensitivity[n], rel=1e-6)
    again = Statistics.from_json(st.to_json())
    assert again.sensitivity == st.sensitivity
    assert all((again.input_power[n] == st.input_power[n]).all() for n in linear)
    with pytest.raises(ValueError):
        Statistics.from_json({"format": "other", "sensitivity": {}})
