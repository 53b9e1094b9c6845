"""How ``llmc inspect`` lays out ``pipeline.inspect.describe``: for a terminal and for a pipe.

A terminal gets a header (source, policy, target, weighting in plain words) and one line
per tensor when the longest name and the columns fit the width; otherwise each name on a
line of its own and its figures on the next, indented — names are never cut, whatever the
width (a SmolLM2 name is 40+ characters, an 80-column terminal has room for the name *or*
the figures). A pipe gets tab-separated values with a header row and raw numbers, one
tensor per line, so ``llmc inspect m.llmc | grep q_proj | cut -f5`` works.

Pure functions returning lines: the command prints them, tests read them.
"""

from __future__ import annotations

import fnmatch
import math
import re
import textwrap
from collections.abc import Iterator, Sequence
from typing import Any

from llmc_format.naming import natural_key
from llmc_format.units import format_size

SORTS = ("name", "size", "bpw", "snr")
#: terminal columns after the name: (title, width)
_COLUMNS = (("dtype", 7), ("shape", 11), ("codec", 17), ("stored", 9), ("bpw", 6),
            ("QP", 3), ("SNR dB", 6))
TSV_FIELDS = ("name", "dtype", "shape", "codec", "stored_bytes", "bpw", "ratio", "qp",
              "snr_db")


def select(tensors: Sequence[dict[str, Any]], filters: Sequence[str] = (),
           sort: str | None = None) -> list[dict[str, Any]]:
    """The tensors matching any of ``filters`` (globs on the name), in ``sort`` order.

    ``name`` (and no sort) is natural order (``naming.natural_key``: layers.2 before
    layers.10), whatever order the archive stores them in; ``size`` and ``bpw`` put the
    largest first; ``snr`` the worst (lowest) first, lossless tensors last. Ties keep
    natural order.
    """
    rows = [t for t in tensors if not filters or any(fnmatch.fnmatchcase(t["name"], f)
                                                      for f in filters)]
    rows.sort(key=lambda t: natural_key(t["name"]))
    if sort == "size":
        rows.sort(key=lambda t: -t["stored_bytes"])
    elif sort == "bpw":
        rows.sort(key=lambda t: -(t["bpw"] or 0.0))
    elif sort == "snr":
        rows.sort(key=lambda t: (t.get("snr_db") is None, t.get("snr_db") or 0.0))
    return rows


def _fmt(v: Any, spec: str) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return format(v, spec)


def _cells(t: dict[str, Any]) -> list[str]:
    return [t["dtype"], "x".join(map(str, t["shape"])) or "()", t["codec"],
            format_size(t["stored_bytes"]), _fmt(t["bpw"], ".3f"), _fmt(t.get("qp"), "d"),
            _fmt(t.get("snr_db"), ".2f")]


def weighting_words(weighting: str | None) -> str:
    """The RD weighting an archive records, in plain words (``auto`` says what it chose)."""
    if not weighting:
        return "-"
    auto = "(auto" in weighting
    base = weighting.split(" (", 1)[0]
    reason = weighting.split("(auto: ", 1)[1][:-1] if "(auto: " in weighting else ""
    words = {
        "calibration-self": "each tensor's error weighed by its loss gradients on text the "
                            "model generated itself (self-calibration)",
        "calibration": "each tensor's error weighed by its loss gradients on a calibration text",
        "nmse": "relative error (each tensor's error over its own energy)",
        "mse": "absolute error (every weight counts the same)",
    }.get(base, base)
    if auto:
        why = (f" (self-calibration was not possible: {reason})" if reason
               else " (transformers could build the model)")
        words += f"; chosen by --weighting auto{why}"
    return words


def header(d: dict[str, Any], width: int = 80) -> list[str]:
    """Source, policy, target and weighting of an archive, one fact per line.

    A fact longer than ``width`` columns continues on indented lines under its label
    (the first line, the archive's path, is never cut), so the header fits the terminal
    the table below it fits."""
    return [*_wrapped(_header_facts(d), width)]


def _wrapped(lines: list[str], width: int) -> Iterator[str]:
    yield lines[0]
    for line in lines[1:]:
        label = re.match(r"[\w -]*?:\s+", line)
        indent = " " * (len(label.group()) if label else 2)
        yield from textwrap.wrap(line, max(width, 40), subsequent_indent=indent,
                                 break_on_hyphens=False) or [line]


def _header_facts(d: dict[str, Any]) -> list[str]:
    meta = d.get("metadata") or {}
    lines = [f"{d['path']}: format {d['format_version']}, written by {meta.get('tool', '?')}"]
    src = meta.get("source") or {}
    files = ", ".join(str(f.get("name")) for f in src.get("files", []) if isinstance(f, dict))
    if src:
        name = f" {src['name']}" if src.get("name") else ""
        lines.append(f"source:    {src.get('format', '?')}{name}" + (f" ({files})" if files else ""))
    lossy = [t for t in d["tensors"] if t.get("lossless") is False]  # aliases have no key
    rd = meta.get("rd")
    pol = meta.get("policy") or {}
    if not lossy:
        lines.append("policy:    lossless (every tensor bit-exact)")
    else:
        pipes = sorted({t["codec"] for t in lossy})
        qp = "a QP per tensor (RD)" if rd else f"QP {pol.get('qp')}"
        lines.append(f"policy:    {len(lossy)} lossy tensors ({', '.join(pipes)}), {qp}, "
                     f"{pol.get('bits', '?')}-bit codes")
    if rd:
        t = rd.get("target") or {}
        kind, value = t.get("kind"), t.get("value")
        what = {"bpw": f"{value:g} bits per lossy weight (all-in)",
                "size": f"whole file {format_size(int(value))}" if value else "?",
                "snr": f"every lossy tensor at least {value:g} dB SNR"}.get(kind, str(kind))
        a = rd.get("achieved") or {}
        got = ""
        if kind == "bpw" and "rd_bpw_all_in" in a:
            got = f"; achieved {a['rd_bpw_all_in']:.3f}"
        elif kind == "size" and "file_bytes" in a:
            got = f"; achieved {format_size(a['file_bytes'])}"
        lines.append(f"target:    {what}{got}, {rd.get('passes')} pass(es)")
        lines.append(f"weighting: {weighting_words(rd.get('weighting'))}")
        act = rd.get("activation")
        if isinstance(act, dict):
            # a repack's note: multipliers "kept from" its input, whose alpha may be unknown
            made = (f" (E[x^2]/mean)^-{act['alpha']}" if act.get("alpha") is not None
                    else "" if act.get("multipliers") else " (E[x^2]/mean)^-?")
            kept = f", {act['multipliers']}" if act.get("multipliers") else ""
            weighted = act.get("weighted_tensors", 1) != 0  # (a pack's note has no count)
            lines.append(f"activation-aware: {act.get('tensors', '?')} Linear weights coded "
                         f"through diagscale, column multipliers{made}{kept}; RD distortion: "
                         f"{'activation-weighted MSE' if weighted else 'MSE'}")
        if rd.get("repacked_from"):
            lines.append(f"repacked from {rd['repacked_from']}")
    return lines


def table(rows: Sequence[dict[str, Any]], width: int) -> list[str]:
    """The per-tensor lines for a terminal ``width`` columns wide; names never cut."""
    fixed = "  ".join(f"{title:>{w}}" if title not in ("codec",) else f"{title:<{w}}"
                      for title, w in _COLUMNS)

    def figures(t: dict[str, Any]) -> str:
        cells = _cells(t)
        if _alias_target(t) is not None:
            cells[2] = "alias"  # the target's name goes on a line of its own
        return "  ".join(f"{c:>{w}}" if title != "codec" else f"{c:<{w}}"
                         for c, (title, w) in zip(cells, _COLUMNS, strict=True))

    def alias_line(t: dict[str, Any]) -> list[str]:
        target = _alias_target(t)
        return [] if target is None else [f"  alias of {target}"]

    name_w = max((len(t["name"]) for t in rows), default=6)
    if name_w + 2 + len(fixed) <= width:  # one line per tensor
        out = [f"{'tensor':<{name_w}}  {fixed}"]
        for t in rows:
            out += [f"{t['name']:<{name_w}}  {figures(t)}", *alias_line(t)]
        return out
    out = ["tensor", f"  {fixed}"]  # the name on its own line, its figures below
    for t in rows:
        out += [t["name"], f"  {figures(t)}", *alias_line(t)]
    return out


def _alias_target(t: dict[str, Any]) -> str | None:
    """The tensor an alias stands for (``describe`` writes its codec as ``alias of X``)."""
    codec = t["codec"]
    return codec[len("alias of "):] if codec.startswith("alias of ") else None


def tsv(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Tab-separated, one tensor per line, raw numbers (for pipes and scripts)."""
    def cell(t: dict[str, Any], k: str) -> str:
        v = t.get(k)
        if k == "shape":
            return "x".join(map(str, v)) or "()"
        if v is None:
            return ""
        return f"{v:.6g}" if isinstance(v, float) else str(v)

    return ["\t".join(TSV_FIELDS)] + ["\t".join(cell(t, k) for k in TSV_FIELDS) for t in rows]


def totals(d: dict[str, Any], shown: int, ratio: str | None = None) -> list[str]:
    """Two lines: what the archive holds, and its size against the source's (``ratio``:
    the caller's wording of the ratios, default against the decoded tensors)."""
    s = d["summary"]
    part = f"{shown} shown of " if shown != s["tensors"] else ""
    ratio = ratio or f"source {format_size(s['source_bytes'])}, ratio {s['ratio']:.3f}"
    return [f"{part}{s['tensors']} tensors ({s['lossy_tensors']} lossy), {s['weights']:,} "
            f"weights, {len(d['attachments'])} attachments",
            f"file {format_size(s['file_bytes'])}, {s['file_bpw']:.3f} bits/weight all-in",
            ratio]
