"""The RD plot: groups, chosen points on their curves, refusal without RD records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import llmc_format
from llmc_format.cli import app
from llmc_format.errors import UsageError
from llmc_format.rd_plot import _curve, group_of, plot_rd


def _tensor(name: str, chosen_qp: int) -> dict:
    n = 256 * 256
    samples = [[q, 6.0 - q / 10, 1e-3 * 2 ** (q / 6)] for q in (22, 29, 36, 43)]
    b = 6.0 - chosen_qp / 10
    return {"name": name, "shape": [256, 256],
            "rd": {"samples": samples, "signal_energy": float(n), "rate_scale": 1.0,
                   "chosen_qp": chosen_qp, "predicted_bpw": b,
                   "predicted_mse": 1e-3 * 2 ** (chosen_qp / 6)}}


def _describe(tensors: list[dict]) -> dict:
    return {"path": "x.llmc", "tensors": tensors,
            "metadata": {"rd": {"target": {"kind": "bpw", "value": 3.0}}}}


def test_group_names_and_chosen_point_on_its_curve() -> None:
    assert group_of("model.layers.12.mlp.up_proj.weight") == "model.layers.*.mlp.up_proj.weight"
    pts, chosen, outside = _curve(_tensor("a", 29))
    assert not outside and chosen == pytest.approx(pts[1])
    _, _, outside = _curve(_tensor("a", 50))
    assert outside  # extrapolated beyond the samples: drawn dashed


def test_plot_draws_groups_and_refuses_without_records(tmp_path: Path) -> None:
    tensors = [_tensor(f"model.layers.{i}.{m}.weight", 30 + i % 5)
               for i in range(30) for m in ("mlp.up_proj", "self_attn.q_proj")]
    drawn = plot_rd(_describe(tensors), tmp_path / "rd.png", top=1)
    assert drawn == {"curves": 60, "groups": 2, "highlighted": 1}
    assert (tmp_path / "rd.png").stat().st_size > 5000
    with pytest.raises(UsageError, match="no RD records"):
        plot_rd(_describe([{"name": "w", "shape": [4], "rd": {}}]), tmp_path / "no.png")
    assert not (tmp_path / "no.png").exists()


def test_command_refuses_a_lossless_archive(tmp_path: Path) -> None:
    arc = llmc_format.save_file({"w": np.zeros((4, 4), np.float32)}, tmp_path / "a.llmc")
    r = CliRunner().invoke(app, ["inspect", str(arc), "--plot", str(tmp_path / "rd.png")])
    assert r.exit_code == 2 and "no RD records" in r.output
    assert not (tmp_path / "rd.png").exists()
