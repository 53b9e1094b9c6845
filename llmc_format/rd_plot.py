"""``llmc inspect --rd --plot``: the RD curves of a target pack, drawn so a person can read them.

An archive packed to a target records, per lossy tensor, its sampled (QP, bits per
weight, MSE) points, its rate correction and the QP chosen. Hundreds of curves on one
axis are unreadable, so tensors are grouped by role — the name with its layer numbers
replaced by ``*`` (``model.layers.*.mlp.up_proj.weight``) — and the ``top`` groups with the
most weights get a colour and a legend entry; the others are drawn faint grey. Each
curve is drawn in the units the allocator used (sampled bits times the tensor's rate
correction), so the chosen point — the predicted rate and SNR at the chosen QP — lies on
its own curve; a QP beyond the samples (extrapolated) is joined by a dashed segment.
The target is drawn as a line: SNR floor (horizontal) or bits per weight (vertical; the
target counts all-in bits, the curves bitstream bits, so the chosen points sit left of it).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from llmc_format.errors import UsageError


def group_of(name: str) -> str:
    """The tensor's role: its name with every number replaced by ``*``."""
    return re.sub(r"\.\d+\.", ".*.", name)


def _curve(t: dict[str, Any]) -> tuple[list[tuple[float, float]], tuple[float, float] | None,
                                       bool]:
    """(samples as (bpw, SNR dB) by QP, the chosen point, whether it is extrapolated)."""
    r = t.get("rd") or {}
    n = max(math.prod(t["shape"]), 1)
    energy = float(r.get("signal_energy") or 0.0)
    scale = float(r.get("rate_scale") or 1.0)
    samples = sorted(r.get("samples", []))
    pts = [(b * scale, 10 * math.log10(energy / (m * n))) for _, b, m in samples
           if energy > 0 and m > 0]
    chosen = None
    pm, pb = r.get("predicted_mse"), r.get("predicted_bpw")
    if energy > 0 and pm and pb is not None:
        chosen = (float(pb), 10 * math.log10(energy / (float(pm) * n)))
    qps = [q for q, _, _ in samples]
    q = r.get("chosen_qp", r.get("qp"))
    outside = bool(qps) and q is not None and not (min(qps) <= q <= max(qps))
    return pts, chosen, outside


def plot_rd(d: dict[str, Any], path: Path, top: int = 8) -> dict[str, int]:
    """Draw ``describe(archive)``'s RD records to ``path`` (PNG); what was drawn.

    Refuses (``UsageError``) an archive without RD records: a lossless archive, or a
    lossy one packed at one fixed ``--qp``, has no curves to draw.
    """
    tensors = [t for t in d["tensors"] if (t.get("rd") or {}).get("samples")]
    if not tensors:
        raise UsageError(f"{Path(d['path']).name} has no RD records to plot: only an archive "
                         "packed to a target (--bpw, --size or --snr) has them")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in tensors:
        groups[group_of(t["name"])].append(t)
    ranked = sorted(groups, key=lambda g: -sum(math.prod(t["shape"]) for t in groups[g]))
    shown = ranked[:top]
    colors = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for g in ranked[top:]:
        for t in groups[g]:
            pts, chosen, _ = _curve(t)
            if pts:
                ax.plot(*zip(*pts, strict=True), "-", color="0.8", lw=0.6, zorder=1)
    for k, g in enumerate(shown):
        color = colors(k % 10)
        weights = sum(math.prod(t["shape"]) for t in groups[g])
        label = f"{g} ({len(groups[g])}, {weights / 1e6:.1f}M w)"
        for i, t in enumerate(groups[g]):
            pts, chosen, outside = _curve(t)
            if pts:
                ax.plot(*zip(*pts, strict=True), "-", color=color, lw=0.8, alpha=0.6,
                        label=label if i == 0 else None, zorder=2)
            if chosen is not None:
                if outside and pts:
                    end = min(pts, key=lambda p: abs(p[0] - chosen[0]))
                    ax.plot([end[0], chosen[0]], [end[1], chosen[1]], "--", color=color,
                            lw=0.8, alpha=0.6, zorder=2)
                ax.plot([chosen[0]], [chosen[1]], "o", color=color, ms=3.5, zorder=3)
    rd = (d.get("metadata") or {}).get("rd") or {}
    target = rd.get("target") or {}
    if target.get("kind") == "snr":
        ax.axhline(float(target["value"]), color="crimson", ls=":", lw=1.2,
                   label=f"target: every tensor >= {target['value']:g} dB")
    elif target.get("kind") == "bpw":
        ax.axvline(float(target["value"]), color="crimson", ls=":", lw=1.2,
                   label=f"target: {target['value']:g} bits/weight all-in")
    ax.plot([], [], "o", color="k", ms=3.5, label="chosen QP (predicted)")
    if len(ranked) > top:
        ax.plot([], [], "-", color="0.8", label=f"{len(ranked) - top} other groups")
    ax.set_xlabel("bits per weight (bitstream, rate-corrected)")
    ax.set_ylabel("SNR (dB)")
    ax.set_title(f"RD curves per tensor, coloured by group — {Path(d['path']).name}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return {"curves": len(tensors), "groups": len(ranked), "highlighted": len(shown)}
