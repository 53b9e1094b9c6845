"""RD-optimized packing to a size / bits-per-weight / SNR target, with real VVC encoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llmc_format.container.reader import Reader
from llmc_format.errors import TargetError
from llmc_format.io.memory import MemorySource
from llmc_format.pipeline.policy import Policy
from llmc_format.pipeline.target import Target, pack_to_target
from llmc_format.pipeline.verify import verify
from llmc_format.rd.allocate import EXTRAPOLATE


def synthetic_model() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    heavy = rng.standard_t(3, size=(128, 256)).astype(np.float32) * 0.02
    return {
        "a.weight": (rng.standard_normal((128, 256)) * 0.02).astype(np.float32),
        "b.weight": (rng.standard_normal((128, 256)) * 0.10).astype(np.float32),
        "c.weight": heavy,
        "d.weight": (rng.standard_normal((64, 256)) * 0.05).astype(np.float32),
        "e.weight": (rng.laplace(size=(96, 256)) * 0.03).astype(np.float32),
        "norm.weight": np.ones(256, dtype=np.float32),
    }


POLICY = Policy(codec="vvc", min_lossy_numel=1024, preset="faster")


def lossy_bpw(path: Path, names: set[str]) -> float:
    with Reader(path) as r:
        lossless = sum(e.stored_bytes for e in r.index.tensors if e.name not in names)
        att = sum(a.blob.length for a in r.attachments())
        weights = sum(r.tensor(n).numel for n in names)
        return 8 * (r.file_size - lossless - att) / weights


LOSSY = {"a.weight", "b.weight", "c.weight", "d.weight", "e.weight"}


@pytest.mark.parametrize("bpw", [2.5, 4.0])
def test_bpw_target_within_two_percent_never_above(tmp_path: Path, bpw: float) -> None:
    out = tmp_path / "m.llmc"
    summary = pack_to_target(MemorySource(synthetic_model()), out, Target.parse(bpw=bpw),
                             policy=POLICY, jobs=2)
    assert "within_tolerance" not in summary
    got = lossy_bpw(out, LOSSY)
    assert bpw * 0.98 <= got <= bpw, (got, summary)
    assert summary["achieved"]["rd_bpw_all_in"] == pytest.approx(got)
    with Reader(out) as r:
        qps = {n: r.tensor(n).rd["chosen_qp"] for n in LOSSY}
        assert all(r.tensor(n).rd["qp"] == qps[n] for n in LOSSY)
        assert len(r.tensor("a.weight").rd["samples"]) == 4
        assert r.metadata["rd"]["target"]["kind"] == "bpw"
        assert r.tensor("norm.weight").pipeline[0]["id"] == "exact"
    # equal weight per parameter: the large-variance tensor gets a finer step relative to
    # its range than a uniform QP would give? At least the QPs must not all be equal here.
    assert len(set(qps.values())) > 1
    assert verify(out).ok


def test_size_target(tmp_path: Path) -> None:
    out = tmp_path / "m.llmc"
    target = 60_000
    summary = pack_to_target(MemorySource(synthetic_model()), out, Target.parse(size="60kB"),
                             policy=POLICY, jobs=2)
    assert "within_tolerance" not in summary
    assert target * 0.98 <= out.stat().st_size <= target


def test_snr_floor(tmp_path: Path) -> None:
    out = tmp_path / "m.llmc"
    pack_to_target(MemorySource(synthetic_model()), out, Target.parse(snr=15.0), policy=POLICY,
                   jobs=2)
    with Reader(out) as r:
        snrs = [r.tensor(n).rd["snr_db"] for n in LOSSY]
    assert min(snrs) >= 15.0
    assert min(snrs) < 21.0  # not wastefully fine


def test_impossible_target_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="coarsest"):
        pack_to_target(MemorySource(synthetic_model()), tmp_path / "m.llmc",
                       Target.parse(bpw=0.05), policy=POLICY, jobs=2)
    assert not (tmp_path / "m.llmc").exists()
    with pytest.raises(TargetError, match="exactly one"):
        Target.parse(bpw=2, snr=3)


def test_cli_target_inspect_rd_plot_and_repack(tmp_path: Path) -> None:
    from safetensors.numpy import save_file
    from typer.testing import CliRunner

    from llmc_format.cli import app

    src = tmp_path / "m.safetensors"
    save_file(synthetic_model(), src)
    arc, small = tmp_path / "m.llmc", tmp_path / "small.llmc"
    runner = CliRunner()
    r = runner.invoke(app, ["pack", str(src), "-o", str(arc), "--codec", "vvc", "--bpw", "3",
                            "--min-lossy-numel", "1024", "-q"])
    assert r.exit_code == 0, r.output
    assert 2.94 <= lossy_bpw(arc, LOSSY) <= 3.0
    r = runner.invoke(app, ["inspect", str(arc), "--rd", "--plot", str(tmp_path / "rd.png")])
    assert r.exit_code == 0, r.output
    assert "chosen" not in r.output and "c.weight" in r.output and "RD: target bpw=3" in r.output
    assert (tmp_path / "rd.png").stat().st_size > 5000
    r = runner.invoke(app, ["repack", str(arc), "-o", str(small), "--bpw", "2", "-q"])
    assert r.exit_code == 0, r.output
    assert 1.96 <= lossy_bpw(small, LOSSY) <= 2.0
    with Reader(small) as rs, Reader(arc) as ra:
        assert rs.tensor("norm.weight").blobs[0].checksum == ra.tensor("norm.weight").blobs[0].checksum
        assert all(rs.tensor(n).rd["qp"] >= ra.tensor(n).rd["qp"] for n in LOSSY)
    assert verify(small).ok


@pytest.mark.parametrize(("scaling", "transform"), [(None, "auto"), (None, "none"), ("row", "auto")])
def test_target_scaling_is_per_tensor_unless_chosen(tmp_path: Path, scaling: str | None,
                                                    transform: str) -> None:
    """A target packs with one scale per tensor: blockdct by default (vvc), per-tensor
    affine with transform="none", and the chosen affine granularity if there is one."""
    out = tmp_path / "m.llmc"
    policy = Policy(codec="vvc", min_lossy_numel=1024, preset="faster", transform=transform,
                    affine={"granularity": scaling} if scaling else {})
    pack_to_target(MemorySource(synthetic_model()), out, Target.parse(bpw=3.0), policy=policy,
                   jobs=2)
    with Reader(out) as r:
        first = [r.tensor(n).pipeline[0] for n in LOSSY]
        params = sum(b.length for n in LOSSY for b in r.tensor(n).blobs if b.stage == 0)
        assert r.tensor("norm.weight").pipeline[0]["id"] == "exact"
    if scaling is None and transform == "auto":
        assert {c["id"] for c in first} == {"blockdct"} and params == 0  # scale in the config
        return
    assert {c["granularity"] for c in first} == {scaling or "tensor"}
    # one (scale, offset) pair per tensor vs one per row: the params shrink accordingly
    rows = sum(synthetic_model()[n].shape[0] for n in LOSSY)
    assert params == (4 * rows if scaling == "row" else 4 * len(LOSSY))


def test_with_target_scaling_resolves_auto() -> None:
    from llmc_format.pipeline.target import with_target_scaling

    assert with_target_scaling(Policy(codec="vvc")).transform == "dct"
    assert with_target_scaling(Policy(codec="hevc")).transform == "dct"
    av1 = with_target_scaling(Policy(codec="av1"))
    assert av1.transform == "none" and av1.affine == {"granularity": "tensor"}
    row = with_target_scaling(Policy(codec="vvc", affine={"granularity": "row"}))
    assert row.transform == "none" and row.affine == {"granularity": "row"}
    assert Policy(codec="vvc").pipeline("w", "float32", (256, 256))[0]["id"] == "affine"  # --qp


def test_sample_qps_follow_each_tensors_spread_under_tensor_scaling() -> None:
    from llmc_format.codecs.video.codecs import Av1Codec, VvcCodec
    from llmc_format.pipeline.target import sample_qps

    rng = np.random.default_rng(1)
    plain = (rng.standard_normal((64, 64)) * 0.02).astype(np.float32)
    spiky = plain.copy()
    spiky[3, 5] = 0.02 * 64  # one 64σ outlier: the range grows ~8x, the step too
    row = Policy(codec="vvc", affine={"granularity": "row"})
    tensor = Policy(codec="vvc", affine={"granularity": "tensor"})
    assert sample_qps(row, spiky) == VvcCodec.sample_qps
    shift_plain = sample_qps(tensor, plain)[0] - VvcCodec.sample_qps[0]
    shift_spiky = sample_qps(tensor, spiky)[0] - VvcCodec.sample_qps[0]
    assert abs(shift_plain) <= 1  # a Gaussian tensor spans about 8σ: sampled as under row
    assert shift_spiky - shift_plain == pytest.approx(-6 * np.log2(8), abs=2)
    assert sample_qps(Policy(codec="av1", affine={"granularity": "tensor"}), spiky) == Av1Codec.sample_qps


def model_with_embedding() -> dict[str, np.ndarray]:
    """Two plain matrices, a token embedding, a matrix on a 4-level grid (its exact storage
    is cheap, ~6.7 bits per weight: a stand-in for a natively quantized tensor) and a norm."""
    rng = np.random.default_rng(7)
    return {
        "model.embed_tokens.weight": (rng.standard_normal((256, 128)) * 0.05).astype(np.float32),
        "a.weight": (rng.standard_normal((128, 256)) * 0.02).astype(np.float32),
        "b.weight": (rng.laplace(size=(128, 256)) * 0.03).astype(np.float32),
        "grid.weight": ((rng.integers(0, 4, size=(128, 256)) - 1.5) * 0.01).astype(np.float32),
        "norm.weight": np.ones(256, dtype=np.float32),
    }


CANDIDATES = {"model.embed_tokens.weight", "a.weight", "b.weight", "grid.weight"}


def test_embedding_is_a_candidate_unless_pinned(tmp_path: Path) -> None:
    out = tmp_path / "m.llmc"
    summary = pack_to_target(MemorySource(model_with_embedding()), out, Target.parse(bpw=3.0),
                             policy=POLICY, jobs=2, weighting="nmse")
    with Reader(out) as r:
        assert r.tensor("model.embed_tokens.weight").pipeline[-1]["id"] == "vvc"
    a = summary["achieved"]
    assert a["rd_weights"] == sum(model_with_embedding()[n].size for n in CANDIDATES)
    assert 3.0 * 0.98 <= a["rd_bpw_all_in"] <= 3.0
    assert a["model_bpw"] == pytest.approx(8 * out.stat().st_size / (a["rd_weights"] + 256))
    pinned = Policy(codec="vvc", min_lossy_numel=1024, preset="faster",
                    lossless_patterns=("*embed_tokens*",))
    summary = pack_to_target(MemorySource(model_with_embedding()), out, Target.parse(bpw=3.0),
                             policy=pinned, jobs=2, weighting="nmse")
    with Reader(out) as r:
        assert [c["id"] for c in r.tensor("model.embed_tokens.weight").pipeline] == ["exact"]
        assert "samples" not in (r.tensor("model.embed_tokens.weight").rd or {})
    assert summary["achieved"]["rd_weights"] == 3 * 128 * 256
    assert summary["kept_exact"] == []


def test_exact_storage_is_an_rd_choice(tmp_path: Path) -> None:
    """Where the budget allows, the tensor whose exact storage is cheap stays exact while
    the others are coded lossy; a size at or above the all-exact file keeps everything
    exact, bit for bit."""
    out = tmp_path / "m.llmc"
    summary = pack_to_target(MemorySource(model_with_embedding()), out, Target.parse(bpw=7.0),
                             policy=POLICY, jobs=2, weighting="nmse")
    assert summary["kept_exact"] == ["grid.weight"]
    with Reader(out) as r:
        grid = r.tensor("grid.weight")
        assert [c["id"] for c in grid.pipeline] == ["exact"] and grid.rd["kept_exact"]
        assert grid.rd["exact_bpw"] == pytest.approx(grid.rd["bpw"])
        assert all(r.tensor(n).pipeline[-1]["id"] == "vvc" for n in CANDIDATES - {"grid.weight"})
    assert summary["achieved"]["kept_exact_tensors"] == 1
    assert summary["achieved"]["rd_bpw_all_in"] <= 7.0
    assert verify(out).ok
    summary = pack_to_target(MemorySource(model_with_embedding()), out, Target.parse(size="400kB"),
                             policy=POLICY, jobs=2, weighting="nmse")
    assert summary["kept_exact"] == sorted(CANDIDATES)
    assert summary["within_tolerance"] is False and summary["passes"] == 1
    assert summary["weighting"].startswith("none")  # no RD samples, no calibration needed
    with Reader(out) as r:
        for e in r.index.tensors:
            assert [c["id"] for c in e.pipeline] == ["exact"]
            assert e.digest["source"] == e.digest["decoded"]
    assert out.stat().st_size <= 400_000
    assert verify(out).ok


def test_self_calibrated_target_is_activation_aware(tmp_path: Path, tiny_model_dir: Path) -> None:
    """A target pack of a model transformers builds: every lossy Linear weight is coded
    through a diagscale stage whose column multipliers come from its inputs' second
    moments (c_j = (E[x_j²]/mean)^-ALPHA), its RD record holds the activation-weighted MSE
    the allocator used, and the file decodes (verify); ``activation_alpha=None`` leaves
    the policy as it was (the per-tensor weighting of before)."""
    import llmc_format
    from llmc_format.io import open_source
    from llmc_format.pipeline.target import activation_policy, with_target_scaling
    from llmc_format.rd.activation import ALPHA, column_multipliers
    from llmc_format.rd.calibration import SELF, statistics

    policy = Policy(codec="vvc", min_lossy_numel=1024, preset="faster")
    with open_source(tiny_model_dir) as src:
        st = statistics(src, SELF, sequences=2, seq_len=64)
        on = pack_to_target(src, tmp_path / "on.llmc", Target.parse(bpw=3.0), policy=policy,
                            jobs=2, sensitivity=st)
        tensors = {n: e() for n, e in src.tensors()}
    assert on["activation"]["alpha"] == ALPHA
    assert on["activation"]["tensors"] == len(st.input_power) == 15  # 7 per layer + lm_head
    with Reader(tmp_path / "on.llmc") as r:
        lossy = [e for e in r.index.tensors if len(e.pipeline) > 1]
        # Linear weights get the stage; the token embedding (an nn.Embedding) does not
        assert {e.name for e in lossy if e.pipeline[0]["id"] == "diagscale"} == {
            e.name for e in lossy if e.name in st.input_power} != set()
        e = max(lossy, key=lambda e: e.numel)
        assert len(e.rd["weighted_mse"]) == len(e.rd["samples"])
        stored = np.frombuffer(r.read_blob(next(b for b in e.blobs if b.stage == 0)), dtype="<f2")
        assert np.array_equal(stored, column_multipliers(st.input_power[e.name]).astype(np.float16))
    assert verify(tmp_path / "on.llmc").ok
    with llmc_format.safe_open(tmp_path / "on.llmc") as f:
        got = f.get_tensor(e.name)
    x = tensors[e.name]
    assert float(np.mean((got - x) ** 2) / np.mean(x ** 2)) < 0.2  # the tensor, not its codes
    shapes = {n: a.shape for n, a in tensors.items()}
    target_policy = with_target_scaling(policy)
    assert activation_policy(target_policy, st, shapes, None) == (target_policy, {})
    assert activation_policy(target_policy, None, shapes) == (target_policy, {})
    plain, weights = activation_policy(target_policy, st, shapes, 0.0)
    assert plain == target_policy and set(weights) == set(st.input_power)


def test_all_exact_pack_uses_a_private_temp_name(tmp_path: Path) -> None:
    """The all-exact shortcut writes through a private, uniquely named directory: a file or
    symlink another user placed at a predictable name beside the output is neither
    followed nor replaced, and nothing but the output is left behind."""
    out = tmp_path / "m.llmc"
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    (tmp_path / f".{out.name}.exact").symlink_to(victim)
    summary = pack_to_target(MemorySource(model_with_embedding()), out, Target.parse(size="400kB"),
                             policy=POLICY, jobs=2, weighting="nmse")
    assert summary["weighting"].startswith("none")
    assert victim.read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [out.name, "victim", f".{out.name}.exact"])
    assert verify(out).ok


@pytest.mark.parametrize("size", ["130kB", "170kB"])
def test_size_target_never_above_and_in_the_window_when_reachable(tmp_path: Path, size: str) -> None:
    """float32 tensors (exact ~27 bits/weight): a size needing ~7 bits/weight lands in
    [0.98·S, S] — their finest default samples (QP ~22, ~5 bits/weight with extrapolation)
    could not reach it; the samples now go as fine as the codec codes. A size between the
    finest lossy choice (~8 bits/weight) and keeping a tensor exact stays under S,
    and then says so and has every lossy tensor at its finest allowed QP."""
    out = tmp_path / "m.llmc"
    target = Target.parse(size=size)
    summary = pack_to_target(MemorySource(synthetic_model()), out, target, policy=POLICY, jobs=2,
                             weighting="nmse")
    got = out.stat().st_size
    assert got <= target.value
    with Reader(out) as r:
        rds = {n: r.tensor(n).rd for n in LOSSY if len(r.tensor(n).pipeline) > 1}
    # the default samples (the 4 coarsest) and EXTRAPOLATE beyond them were not enough
    below_base = [n for n, rd in rds.items()
                  if rd["chosen_qp"] < sorted(q for q, _, _ in rd["samples"])[-4] - EXTRAPOLATE]
    assert below_base
    if summary.get("within_tolerance", True):
        assert got >= target.value * 0.98
    else:
        # no finer choice was left: each lossy tensor at (or beyond) its finest sample
        assert all(rd["chosen_qp"] <= min(q for q, _, _ in rd["samples"])
                   for rd in rds.values()), rds
    if size == "130kB":
        assert "within_tolerance" not in summary, (got, summary)
    assert verify(out).ok


class WithAttachment(MemorySource):
    """A MemorySource with a compressible attachment (a stand-in for tokenizer.json)."""

    def attachments(self):  # type: ignore[override]
        yield "tokenizer.json", b'{"vocab": [' + b'"token", ' * 20_000 + b'"end"]}'


def test_plan_counts_attachments_as_stored(tmp_path: Path) -> None:
    """The plan's attachment bytes are what the writer stores (zstd), not the raw length
    (~200 kB here: a size of 80 kB was refused as below the smallest possible file)."""
    from llmc_format.pipeline.target import measure_source, with_target_scaling

    src = WithAttachment(synthetic_model())
    plan = measure_source(src, with_target_scaling(POLICY), 2)
    raw = len(next(iter(src.attachments()))[1])
    out = tmp_path / "m.llmc"
    summary = pack_to_target(src, out, Target.parse(size="80kB"), policy=POLICY, jobs=2,
                             weighting="nmse")
    with Reader(out) as r:
        stored = sum(a.blob.length for a in r.attachments())
    assert plan.attachment_bytes == stored < raw / 10
    assert "within_tolerance" not in summary and 78_400 <= out.stat().st_size <= 80_000


def test_a_codec_failure_in_a_pass_raises_that_tensors_floor(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """libvvenc can refuse a low QP on a whole tensor that its sample coded at: the pass
    that failed gives that tensor a floor 2 QPs above and allocates again; a failure that
    names no lossy tensor is raised as it is."""
    import llmc_format.pipeline.target as target_mod
    from llmc_format.errors import CodecError

    real = target_mod.pack_source
    refused: list[int] = []

    def refusing(*args, **kwargs):  # the real pack, after one refusal of a.weight's QP
        if not refused:
            refused.append(kwargs["qp_overrides"]["a.weight"])
            raise CodecError("tensor 'a.weight' frame 0: libvvenc failed (exit 187)")
        return real(*args, **kwargs)

    monkeypatch.setattr(target_mod, "pack_source", refusing)
    out = tmp_path / "m.llmc"
    summary = pack_to_target(MemorySource(synthetic_model()), out, Target.parse(bpw=4.0),
                             policy=POLICY, jobs=2, weighting="nmse")
    assert "within_tolerance" not in summary and summary["passes"] >= 2
    with Reader(out) as r:
        assert r.tensor("a.weight").rd["chosen_qp"] >= refused[0] + 2
    assert verify(out).ok

    def broken(*args, **kwargs):
        raise CodecError("tensor 'norm.weight': lossless round trip is not bit-exact")

    monkeypatch.setattr(target_mod, "pack_source", broken)
    with pytest.raises(CodecError, match=r"norm\.weight"):
        pack_to_target(MemorySource(synthetic_model()), tmp_path / "n.llmc", Target.parse(bpw=4.0),
                       policy=POLICY, jobs=2, weighting="nmse")
    assert not (tmp_path / "n.llmc").exists()
