"""``repack`` of activation-aware archives: the ``diagscale`` multipliers survive re-coding.

Real codecs (hevc: vvenc refuses some of these small frames at the fine QPs a repack
may extrapolate to, a failure the retry in ``pipeline.target._passes`` does not always
get past within its passes) on the tiny Llama of ``conftest.tiny_model_dir`` (width 32, 2 layers),
self-calibrated in seconds. Its token embedding is pinned exact; the output head (a
Linear of 30522 x 32) is coded with the 14 decoder matrices (1-2 k weights each), so
index entries are a small share of the bits and the targets can be the usual 3-4 bpw."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import llmc_format
from llmc_format.container.reader import Reader
from llmc_format.io import open_source
from llmc_format.pipeline.pack import pack_source
from llmc_format.pipeline.policy import Policy
from llmc_format.pipeline.target import Target, pack_to_target, repack
from llmc_format.pipeline.verify import verify
from llmc_format.rd.activation import ALPHA, CLIP, plan_for

PINNED = ("model.embed_tokens.weight",)
POLICY = Policy(codec="hevc", min_lossy_numel=1024, lossless_patterns=PINNED)


@pytest.fixture(scope="module")
def aware(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path
          ) -> tuple[Path, dict[str, np.ndarray], Any]:
    """An activation-aware target pack of the tiny model at 4 bpw, its float32 tensors and
    the calibration statistics it was made with."""
    from llmc_format.rd.calibration import SELF, statistics

    out = tmp_path_factory.mktemp("aware") / "bpw4.llmc"
    with open_source(tiny_model_dir) as src:
        st = statistics(src, SELF, sequences=2, seq_len=64)
        summary = pack_to_target(src, out, Target.parse(bpw=4.0), policy=POLICY, jobs=2,
                                 sensitivity=st)
        tensors = {n: np.asarray(e(), dtype=np.float32) for n, e in src.tensors()}
    assert summary["activation"]["tensors"] > 0
    return out, tensors, st


def stage0(path: Path) -> dict[str, tuple[dict[str, Any], bytes]]:
    """Per tensor stored through a leading diagscale: its stored config and vector bytes."""
    with Reader(path) as r:
        return {e.name: (dict(e.pipeline[0]),
                         b"".join(r.read_blob(b) for b in e.stage_blobs(0)))
                for e in r.index.tensors if e.pipeline and e.pipeline[0]["id"] == "diagscale"}


def rel_err(path: Path, tensors: dict[str, np.ndarray], names: Any) -> float:
    """Error energy over signal energy of the tensors ``names`` decoded from ``path``."""
    err = energy = 0.0
    with llmc_format.safe_open(path) as f:
        for n in names:
            x = tensors[n].astype(np.float64)
            err += float(np.sum((f.get_tensor(n).astype(np.float64) - x) ** 2))
            energy += float(np.sum(x ** 2))
    return err / energy


def test_repack_keeps_every_tensors_multipliers(aware: tuple[Path, dict, Any],
                                                tmp_path: Path) -> None:
    """Each tensor stored through diagscale is re-coded through the same stage with bit
    for bit the same vectors, decodes close to the original, and the allocation used the
    activation-weighted samples the input recorded (summary and records say so)."""
    src, tensors, _ = aware
    before = stage0(src)
    assert before
    out = tmp_path / "bpw3.llmc"
    summary = repack(src, out, Target.parse(bpw=3.0), jobs=2)
    after = stage0(out)
    assert after == before  # same configs ({"id", "cols", "rows"}) and same binary16 bytes
    act = summary["activation"]
    assert act["tensors"] == len(before) == act["weighted_tensors"]
    assert act["alpha"] == ALPHA and act["clip"] == CLIP
    assert act["multipliers"] == f"kept from {src.name}" and "recorded" in act["distortion"]
    with Reader(out) as r:
        assert r.metadata["rd"]["activation"] == act
        for n in before:
            e = r.tensor(n)
            assert [c["id"] for c in e.pipeline][1:] == ["blockdct", "hevc"]
            assert len(e.rd["weighted_mse"]) == len(e.rd["samples"])
    # the tensors (not their scaled codes), a little coarser than the input's
    assert rel_err(src, tensors, before) < rel_err(out, tensors, before) < 0.15
    assert summary["achieved"]["rd_bpw_all_in"] <= 3.0
    assert verify(out).ok


def test_dropping_the_multipliers_is_the_old_behaviour(aware: tuple[Path, dict, Any],
                                                       tmp_path: Path) -> None:
    """``keep_multipliers=False`` (the baseline the benchmark compares with) codes every
    tensor without the stage and records no activation note."""
    src, tensors, _ = aware
    out = tmp_path / "plain.llmc"
    summary = repack(src, out, Target.parse(bpw=3.0), jobs=2, keep_multipliers=False)
    assert stage0(out) == {} and "activation" not in summary
    assert rel_err(out, tensors, stage0(src)) < 0.5


def test_repack_twice_keeps_them_and_its_recorded_alpha(aware: tuple[Path, dict, Any],
                                                        tmp_path: Path) -> None:
    """A repacked archive records the α its multipliers were made with, so it repacks
    again with the same vectors."""
    src, _, _ = aware
    mid, out = tmp_path / "mid.llmc", tmp_path / "out.llmc"
    repack(src, mid, Target.parse(bpw=3.5), jobs=2)
    summary = repack(mid, out, Target.parse(bpw=3.0), jobs=2)
    assert stage0(out) == stage0(src) and summary["activation"]["alpha"] == ALPHA


def fixed_qp_pack(tiny_model_dir: Path, st: Any, dst: Path, *, alpha: float | None) -> None:
    """A pack at one QP with the tiny model's activation multipliers given explicitly
    (``Policy.diagscale``): no RD samples, so a repack measures afresh. ``alpha``: the
    ``rd.activation`` record a target pack writes (None: none, multipliers of unknown origin)."""
    with open_source(tiny_model_dir) as src:
        shapes = {n: tuple(e.shape) for n, e in src.tensors()}
        scales, _ = plan_for(st.input_power, shapes, shapes, ALPHA)
        policy = Policy(codec="hevc", qp=30, min_lossy_numel=1024,
                        transform="dct", lossless_patterns=PINNED, lossy_embeddings=True,
                        diagscale=scales)
        meta = None if alpha is None else {"rd": {"activation": {"alpha": alpha, "clip": CLIP}}}
        pack_source(src, dst, policy=policy, jobs=2, extra_metadata=meta)


@pytest.mark.slow  # two packs and two repacks that measure their samples afresh: ~25 s
def test_fresh_samples_weight_columns_by_the_recovered_statistics(
        aware: tuple[Path, dict, Any], tiny_model_dir: Path, tmp_path: Path) -> None:
    """An input without RD samples but with the α its multipliers came from: the fresh
    samples measure the activation-weighted MSE with weights recovered from the multipliers;
    without the α the multipliers are still kept, the allocation uses the plain MSE."""
    _, _, st = aware
    for alpha in (ALPHA, None):
        src, out = tmp_path / f"qp-{alpha}.llmc", tmp_path / f"out-{alpha}.llmc"
        fixed_qp_pack(tiny_model_dir, st, src, alpha=alpha)
        before = stage0(src)
        assert before
        summary = repack(src, out, Target.parse(bpw=3.0), jobs=2)
        act = summary["activation"]
        assert act["tensors"] == len(before)
        with Reader(out) as r:
            kept = {n for n in before if len(r.tensor(n).pipeline) > 1}
            weighted = {n for n in kept if "weighted_mse" in r.tensor(n).rd}
        assert kept and {n: before[n] for n in kept} == stage0(out)
        if alpha is None:
            assert act["weighted_tensors"] == 0 and act["distortion"].startswith("MSE")
            assert weighted == set() and "alpha" not in act
        else:
            assert act["weighted_tensors"] == len(before) and "recovered" in act["distortion"]
            assert weighted == kept and act["alpha"] == ALPHA


def test_a_tensor_going_exact_drops_its_multipliers(aware: tuple[Path, dict, Any],
                                                    tiny_model_dir: Path, tmp_path: Path) -> None:
    """A target the exact storage of every tensor meets: the allocation keeps them exact
    (the input's decoded values, bit for bit) and no diagscale stage is left."""
    _, _, st = aware
    src, out = tmp_path / "qp.llmc", tmp_path / "exact.llmc"
    fixed_qp_pack(tiny_model_dir, st, src, alpha=ALPHA)
    names = set(stage0(src))
    repack(src, out, Target.parse(bpw=40.0), jobs=2)
    assert stage0(out) == {}
    with Reader(out) as r, llmc_format.safe_open(src) as a, llmc_format.safe_open(out) as b:
        for n in names:
            assert [c["id"] for c in r.tensor(n).pipeline] == ["exact"]
            assert np.array_equal(a.get_tensor(n), b.get_tensor(n))


def test_cli_repack_says_the_multipliers_are_kept(aware: tuple[Path, dict, Any],
                                                  tmp_path: Path) -> None:
    """``llmc repack`` prints what happened to the activation-aware tensors, ``--json``
    carries it, and ``inspect``'s header of the output says the multipliers were kept."""
    from typer.testing import CliRunner

    from llmc_format.cli import app
    from llmc_format.inspect_view import header
    from llmc_format.pipeline.inspect import describe

    src, _, _ = aware
    n = len(stage0(src))
    runner = CliRunner()
    r = runner.invoke(app, ["repack", str(src), "-o", str(tmp_path / "o.llmc"), "--bpw", "3"])
    assert r.exit_code == 0, r.output
    text = " ".join(r.stdout.split())
    assert (f"activation-aware: {n} tensors keep their diagscale column multipliers (kept "
            f"from {src.name};" in text), text
    assert stage0(tmp_path / "o.llmc") == stage0(src)
    r = runner.invoke(app, ["repack", str(src), "-o", str(tmp_path / "j.llmc"), "--bpw", "3",
                            "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["rd"]["activation"]["tensors"] == n
    # what inspect shows on a terminal
    lines = header(describe(tmp_path / "o.llmc"))
    assert (f"activation-aware: {n} Linear weights coded through diagscale, column multipliers "
            f"(E[x^2]/mean)^-{ALPHA}, kept from {src.name}; RD distortion: activation-weighted "
            "MSE") in " ".join(" ".join(lines).split()), lines
