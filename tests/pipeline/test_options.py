"""PackOptions: one validated set of pack options for the command and the API."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import llmc_format
from llmc_format.errors import LlmcError, UsageError
from llmc_format.pipeline.options import PackOptions, check_paths, check_source, from_api


@pytest.mark.parametrize(("kwargs", "says"), [
    ({"codec": "vcc"}, "did you mean 'vvc'"),
    ({"codec": "vvc", "qp": 99}, "--qp"),
    ({"codec": "vvc", "bits": 20}, "--bits"),
    ({"codec": "vvc", "preset": "turbo"}, "--preset"),
    ({"codec": "vvc", "weighting": "nsme", "bpw": 3}, "did you mean 'nmse'"),
    ({"codec": "vvc", "bpw": 3, "size": "1MB"}, "one target"),
    ({"codec": "vvc", "bpw": -1}, "positive"),
    ({"codec": "vvc", "size": "lots"}, "not a size"),
    ({"bpw": 3}, "needs a lossy codec"),
    ({"codec": "ffv1", "bpw": 3}, "needs a lossy codec"),
    ({"codec": "vvc", "bpw": 3, "resume": True}, "--resume"),
    ({"codec": "vvc", "transform": "dct"}, "needs a target"),
    ({"codec": "vvc", "scaling": "tensor"}, "needs a target"),
    ({"codec": "vvc", "scaling": "column"}, "--scaling"),
    ({"codec": "vvc", "bpw": 3, "calibration": "no-such-file.txt"}, "--calibration"),
    ({"jobs": 0}, "--jobs"),
    ({"executor": "dask"}, "--executor"),
    ({"ray_address": "auto"}, "--executor ray"),
])
def test_invalid_options_raise_usage_error(kwargs: dict, says: str) -> None:
    with pytest.raises(UsageError, match=None) as exc:
        PackOptions(**kwargs)
    assert says in str(exc.value)


def test_options_without_effect_are_warned() -> None:
    def warns(**kw: object) -> str:
        return " | ".join(from_api(**kw).warnings())

    assert "--qp has no effect with --codec exact" in warns(qp=30)
    assert "--lossy has no effect" in warns(lossy=["*mlp*"])
    assert "--qp 30 has no effect with --bpw" in warns(codec="vvc", bpw=3, qp=30)
    assert "--weighting has no effect without a target" in warns(codec="vvc", weighting="mse")
    assert warns(codec="vvc", qp=30) == ""
    assert warns(codec="vvc", bpw=3) == ""


def test_unknown_api_option_names_the_closest() -> None:
    with pytest.raises(UsageError, match="did you mean 'lossless'"):
        from_api(losless=["x"])


class _Spec:
    def __init__(self, dtype: str, shape: tuple[int, ...]) -> None:
        self.dtype, self.shape = dtype, shape


def test_check_source_globs_and_names() -> None:
    names = ["model.layers.0.mlp.up_proj.weight", "model.norm.weight"]
    specs = {names[0]: _Spec("float32", (512, 512)), names[1]: _Spec("float32", (512,))}
    opts = PackOptions(codec="vvc", lossless=("*attn*",))
    assert check_source(opts, names, specs, 0) == ["--lossless '*attn*' matches no tensor"]
    with pytest.raises(UsageError, match=r"did you mean 'model\.norm\.weight'"):
        check_source(PackOptions(codec="vvc", lossy=("model.norm.weigth",)), names, specs, 0)
    warned = check_source(PackOptions(codec="vvc", min_lossy_numel=10**9), names, specs, 0)
    assert "the archive is lossless" in warned[0]
    with pytest.raises(UsageError, match="nothing for --bpw"):
        check_source(PackOptions(codec="vvc", bpw=3, min_lossy_numel=10**9), names, specs, 0)
    with pytest.raises(UsageError, match=r"--size .* is impossible"):
        check_source(PackOptions(codec="vvc", size="1KB"), names, specs, 5000)


def test_a_target_validates_the_candidates_it_packs() -> None:
    """Under a target, embeddings and heads are RD candidates (pipeline.target): validation
    must not refuse a model whose only large matrices they are."""
    names = ["model.embed_tokens.weight", "lm_head.weight"]
    specs = {n: _Spec("float32", (256, 128)) for n in names}
    assert check_source(PackOptions(codec="vvc", bpw=3), names, specs, 0) == []
    assert PackOptions(codec="vvc", bpw=3).policy().is_lossy(names[0], "float32", (256, 128))
    warned = check_source(PackOptions(codec="vvc", qp=30), names, specs, 0)
    assert "embeddings and output heads stay exact" in warned[0]


def test_check_paths(tmp_path: Path) -> None:
    src = tmp_path / "m.safetensors"
    src.write_bytes(b"x")
    with pytest.raises(UsageError, match="-o -"):
        check_paths(src, "-", force=True)
    with pytest.raises(LlmcError, match="is a directory"):
        check_paths(src, tmp_path, force=True)
    with pytest.raises(LlmcError, match="No such file or directory"):
        check_paths(src, tmp_path / "nope" / "a.llmc", force=True)
    (tmp_path / "a.llmc").write_bytes(b"old")
    with pytest.raises(LlmcError, match="--force"):
        check_paths(src, tmp_path / "a.llmc", force=False)
    check_paths(src, tmp_path / "a.llmc", force=True)


def test_api_refuses_before_writing(tmp_path: Path) -> None:
    dst = tmp_path / "a.llmc"
    w = np.zeros((256, 256), np.float32)
    with pytest.raises(UsageError):
        llmc_format.save_file({"w": w}, dst, codec="vvc", qp=99)
    with pytest.raises(UsageError):
        llmc_format.save_file({"w": w}, dst, codec="vvc", bpw=3, size="1MB")
    assert list(tmp_path.iterdir()) == []


def test_api_default_weighting_is_the_commands() -> None:
    assert PackOptions().weighting == "auto"
    assert from_api(codec="vvc", bpw=3).weighting == "auto"
