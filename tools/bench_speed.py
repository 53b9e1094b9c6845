"""Speed and memory benchmark: pack/unpack throughput, peak memory, random access, VVC speed knobs.

Subcommands (each prints a table and can write JSON with ``--json``):

- ``synth PATH --gib 2.1``: write a synthetic bf16 safetensors model (one 32000x4096
  embedding, then 4096x4096 matrices until the size is reached), streamed: the writer
  never holds more than one tensor.
- ``run SRC --codec exact vvc --jobs 1 2``: ``llmc pack`` then ``llmc unpack`` (and a
  decode-only pass, tensors decoded and dropped) of SRC (``smollm2`` = the SmolLM2-135M
  GGUF of ``tools/models.py``, or a path), each in a subprocess. Reported per step: wall
  seconds, CPU seconds (user + system of the process and the FFmpeg processes it waited
  for), weights per wall second and per CPU second, peak RSS (``VmHWM``: includes pages
  of memory-mapped input files, which the kernel can drop at will) and peak anonymous RSS
  (``RssAnon`` sampled every 20 ms: memory the process really allocated).
- ``access``: time to open an archive and read one tensor (``llmc_format.safe_open`` +
  ``get_tensor``) from a small archive and from large ones (many tensors, many bytes), next
  to ``safetensors.safe_open`` + ``get_tensor`` on the same tensor.
- ``vvc``: the VVC encoder's speed knobs (preset, FFmpeg ``threads`` per process, tensors
  encoded at once, frame size) on the 7 Linear weights of SmolLM2 layers: CPU seconds,
  wall seconds, bits per weight and SNR of each setting.

The machine is shared: wall times depend on the load (printed with each result), CPU
seconds much less so; compare CPU seconds across runs, wall within one run.

Run:  python -m tools.bench_speed run smollm2 --codec exact vvc --qp 33
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make `tools` and `llmc_format` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from llmc_format.codecs.registry import get_codec_class

LLMC = [sys.executable, "-m", "llmc_format.cli"]
GIB = 1 << 30
MIB = 1 << 20


def load_average() -> float:
    return os.getloadavg()[0]


# ----------------------------------------------------------------------------- measuring


@dataclass
class Measurement:
    """One subprocess run: times, CPU, memory."""

    what: str
    wall_s: float
    cpu_s: float
    max_rss_mib: float
    peak_anon_mib: float
    peak_file_mib: float
    load_avg: float
    returncode: int
    extra: dict[str, Any] = field(default_factory=dict)


def _status_kib(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("RssAnon", "RssFile", "VmRSS"):
                    out[key] = int(rest.split()[0])
    except (OSError, ValueError):
        pass
    return out


def measure(what: str, cmd: Sequence[str], *, env: dict[str, str] | None = None,
            cwd: str | None = None) -> Measurement:
    """Run ``cmd``; sample its anonymous/file RSS every 20 ms; CPU and peak RSS from wait4."""
    load = load_average()
    t0 = time.perf_counter()
    proc = subprocess.Popen(list(cmd), env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    peaks = {"RssAnon": 0, "RssFile": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            st = _status_kib(proc.pid)
            for k in peaks:
                peaks[k] = max(peaks[k], st.get(k, 0))
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stderr = proc.stderr.read() if proc.stderr else b""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    if proc.returncode != 0:
        print(f"[{what}] exit {proc.returncode}: {stderr.decode(errors='replace')[-2000:]}",
              file=sys.stderr)
    return Measurement(what, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024,
                       peaks["RssAnon"] / 1024, peaks["RssFile"] / 1024, load, proc.returncode)


def cpu_seconds() -> float:
    """CPU of this process plus the children it waited for (FFmpeg encoders)."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


# ----------------------------------------------------------------------------- synth


SYNTH_EMBED = (32000, 4096)
SYNTH_MATRIX = (4096, 4096)


def write_synth(path: Path, gib: float, seed: int = 0) -> dict[str, Any]:
    """A bf16 safetensors file of ``gib`` GiB or a little more, written one tensor at a time.

    Values are Gaussian (std 0.02, like initialised weights) so ``exact`` sees realistic
    exponent statistics. The header is written first (every shape is known up front).
    """
    import ml_dtypes

    shapes = [("model.embed_tokens.weight", SYNTH_EMBED)]
    total = math.prod(SYNTH_EMBED) * 2
    i = 0
    while total < gib * GIB:
        shapes.append((f"model.layers.{i}.mlp.up_proj.weight", SYNTH_MATRIX))
        total += math.prod(SYNTH_MATRIX) * 2
        i += 1
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in shapes:
        n = math.prod(shape) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    rng = np.random.default_rng(seed)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for _, shape in shapes:
            rows_per = max(1, (64 * MIB) // (shape[1] * 4))
            for r in range(0, shape[0], rows_per):  # 64 MiB of float32 at a time
                block = rng.standard_normal((min(rows_per, shape[0] - r), shape[1]), np.float32)
                f.write((block * 0.02).astype(ml_dtypes.bfloat16).tobytes())
    os.replace(tmp, path)
    return {"path": str(path), "bytes": path.stat().st_size, "tensors": len(shapes),
            "largest_tensor_bytes": math.prod(SYNTH_EMBED) * 2}


# ----------------------------------------------------------------------------- pack/unpack


def resolve_source(src: str) -> Path:
    if src == "smollm2":
        from tools.models import smollm2_gguf_path

        return smollm2_gguf_path()
    return Path(src)


def archive_weights(path: Path) -> tuple[int, int, int]:
    """(weights, decoded bytes, stored tensor bytes) of the non-alias tensors of an archive."""
    from llmc_format.container.reader import Reader

    with Reader(path) as r:
        ts = [t for t in r.index.tensors if t.alias_of is None]
        return sum(t.numel for t in ts), sum(t.nbytes for t in ts), sum(t.stored_bytes for t in ts)


def _decode_only(archive: str, jobs: int, report: Path | None) -> None:
    """Decode every tensor and drop it (what unpack costs without writing files); the
    in-process wall and CPU seconds (no interpreter start-up or imports) go to ``report``."""
    from llmc_format.container.reader import Reader
    from llmc_format.pipeline.unpack import iter_tensors

    c0, t0 = cpu_seconds(), time.perf_counter()
    with Reader(archive) as r:
        for _ in iter_tensors(r, jobs=jobs):
            pass
    if report is not None:
        report.write_text(json.dumps({"inproc_wall_s": time.perf_counter() - t0,
                                      "inproc_cpu_s": cpu_seconds() - c0}))


def run_pack_unpack(src: Path, work: Path, codecs: Sequence[str], qp: int, jobs: Sequence[int],
                    preset: str | None, steps: Sequence[str]) -> list[dict[str, Any]]:
    work.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    for codec in codecs:
        for j in jobs:
            arc = work / f"{codec}-j{j}.llmc"
            out = work / f"{codec}-j{j}.out"
            if "pack" in steps or not arc.exists():
                cmd = [*LLMC, "pack", str(src), "-o", str(arc), "--codec", codec, "-j", str(j),
                       "-q", "-f"]
                if get_codec_class(codec).qp_range is not None:  # type: ignore[attr-defined]  # a QP codec
                    cmd += ["--qp", str(qp)] + (["--preset", preset] if preset else [])
                rows.append(_row(measure(f"pack {codec} -j{j}", cmd, env=env), arc))
            if "unpack" in steps:
                shutil.rmtree(out, ignore_errors=True)
                cmd = [*LLMC, "unpack", str(arc), "-o", str(out), "-j", str(j), "-q"]
                rows.append(_row(measure(f"unpack {codec} -j{j}", cmd, env=env), arc))
                shutil.rmtree(out, ignore_errors=True)
            if "decode" in steps:
                report = work / "decode-report.json"
                cmd = [sys.executable, "-m", "tools.bench_speed", "_decode", str(arc), "-j", str(j),
                       "--report", str(report)]
                m = measure(f"decode {codec} -j{j}", cmd, env=env)
                m.extra = json.loads(report.read_text()) if report.exists() else {}
                row = _row(m, arc)
                if m.extra:  # throughput of the decoding itself
                    row["inproc_mb_per_s"] = row["decoded_bytes"] / m.extra["inproc_wall_s"] / 1e6
                    row["inproc_mb_per_cpu_s"] = row["decoded_bytes"] / m.extra["inproc_cpu_s"] / 1e6
                    row["inproc_mweights_per_s"] = row["weights"] / m.extra["inproc_wall_s"] / 1e6
                    row["inproc_mweights_per_cpu_s"] = row["weights"] / m.extra["inproc_cpu_s"] / 1e6
                rows.append(row)
            print(json.dumps(rows[-1]), flush=True)
    return rows


def _row(m: Measurement, arc: Path) -> dict[str, Any]:
    weights, raw, stored = archive_weights(arc) if arc.exists() else (0, 0, 0)
    d = asdict(m)
    d.update({
        "weights": weights, "decoded_bytes": raw, "stored_bytes": stored,
        "archive_bytes": arc.stat().st_size if arc.exists() else 0,
        "bpw_tensors": 8 * stored / weights if weights else None,
        "mweights_per_s": weights / m.wall_s / 1e6 if m.wall_s else None,
        "mweights_per_cpu_s": weights / m.cpu_s / 1e6 if m.cpu_s else None,
        "mb_per_s": raw / m.wall_s / 1e6 if m.wall_s else None,
        "mb_per_cpu_s": raw / m.cpu_s / 1e6 if m.cpu_s else None,
    })
    return d


# ----------------------------------------------------------------------------- access


def _best_of(fn: Callable[[], Any], repeat: int) -> float:
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def time_access(archive: Path, name: str, repeat: int = 5) -> dict[str, float]:
    """Seconds to open ``archive``, to read ``name`` from it open, and both (warm cache)."""
    import llmc_format

    def open_only() -> None:
        with llmc_format.safe_open(archive):
            pass

    def open_and_read() -> None:
        with llmc_format.safe_open(archive) as f:
            f.get_tensor(name)

    with llmc_format.safe_open(archive) as f:
        read = _best_of(lambda: f.get_tensor(name), repeat)
    return {"open_s": _best_of(open_only, repeat), "get_tensor_s": read,
            "open_and_get_s": _best_of(open_and_read, repeat)}


def time_safetensors(path: Path, name: str, repeat: int = 5) -> dict[str, float]:
    """As ``time_access`` with safetensors; ``get_tensor`` there returns a view of its memory
    map (nothing read yet), so the tensor is also copied out to count reading its bytes."""
    from safetensors import safe_open

    def open_only() -> None:
        with safe_open(str(path), framework="pt"):
            pass

    def open_and_read() -> None:
        with safe_open(str(path), framework="pt") as f:
            f.get_tensor(name).clone()

    with safe_open(str(path), framework="pt") as f:
        read = _best_of(lambda: f.get_tensor(name).clone(), repeat)
    return {"open_s": _best_of(open_only, repeat), "get_tensor_s": read,
            "open_and_get_s": _best_of(open_and_read, repeat)}


def run_access(work: Path, synth: Path | None, many: int) -> list[dict[str, Any]]:
    """One 4096x4096 bf16 tensor read from archives of growing size and tensor count."""
    import ml_dtypes
    from safetensors.torch import save_file

    import llmc_format
    from llmc_format.io.torchconv import to_torch

    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    target = "model.layers.0.mlp.up_proj.weight"
    small = {target: (0.02 * rng.standard_normal(SYNTH_MATRIX, np.float32)).astype(ml_dtypes.bfloat16)}
    if synth is not None:  # the same tensor as in the big model, so the rows compare alike
        from safetensors import safe_open

        with safe_open(str(synth), framework="pt") as f:
            from llmc_format.io.torchconv import from_torch

            small = {target: from_torch(f.get_tensor(target))}
    cases: list[tuple[str, dict[str, np.ndarray] | Path]] = [("1 tensor, 32 MiB", small)]
    tiny = {f"model.layers.{i // 8}.t{i % 8}.weight": rng.standard_normal(64, np.float32)
            for i in range(many)}
    cases.append((f"{many + 1} tensors, 32 MiB", {**small, **tiny}))
    if synth is not None:
        cases.append((f"synthetic {synth.stat().st_size / GIB:.2f} GiB", synth))
    rows = []
    for label, content in cases:
        st = work / f"access-{len(rows)}.safetensors"
        if isinstance(content, Path):
            st = content
        else:
            save_file({k: to_torch(v) for k, v in content.items()}, str(st))
        arc = work / f"access-{len(rows)}.llmc"
        subprocess.run([*LLMC, "pack", str(st), "-o", str(arc), "-q", "-f"], check=True)
        with llmc_format.safe_open(arc) as f:
            n_tensors = len(f.keys())
        row = {"case": label, "tensors": n_tensors, "archive_bytes": arc.stat().st_size,
               "llmc": time_access(arc, target), "safetensors": time_safetensors(st, target),
               "load_avg": load_average()}
        print(json.dumps(row), flush=True)
        rows.append(row)
        arc.unlink()
        if st != synth:
            st.unlink()
    return rows


# ----------------------------------------------------------------------------- vvc knobs


def smollm2_layer_weights(layers: range) -> dict[str, np.ndarray]:
    """The 7 Linear weights of SmolLM2 ``layers`` (float32, as packing sees them)."""
    from llmc_format.io import open_source
    from tools.models import smollm2_gguf_path, smollm2_linear_names

    wanted = set(smollm2_linear_names(layers))
    with open_source(smollm2_gguf_path()) as src:
        return {n: e() for n, e in src.tensors() if n in wanted}


def encode_setting(tensors: dict[str, np.ndarray], qp: int, preset: str, threads: int, jobs: int,
                   target_pixels: int) -> dict[str, Any]:
    """Encode every tensor with one VVC setting; CPU, wall, rate and SNR."""
    from llmc_format.codecs.base import ArraySpec
    from llmc_format.codecs.stages import decode_encoded, encode_tensor
    from llmc_format.metrics import distortion

    pipe = [{"id": "affine", "bits": 10},
            {"id": "vvc", "bits": 10, "qp": qp, "preset": preset, "threads": threads,
             "target_pixels": target_pixels}]

    def one(item: tuple[str, np.ndarray]) -> tuple[int, float, float]:
        name, arr = item
        spec = ArraySpec("float32", arr.shape, name)
        enc = encode_tensor(arr, spec, pipe)
        d = distortion(arr, decode_encoded(enc, spec))
        return sum(len(b) for _, b in enc.blobs), d["mse"] * arr.size, float(np.dot(
            arr.ravel().astype(np.float64), arr.ravel().astype(np.float64)))

    load = load_average()
    c0, t0 = cpu_seconds(), time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        results = list(pool.map(one, tensors.items()))
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    n = sum(a.size for a in tensors.values())
    stored = sum(r[0] for r in results)
    err, sig = sum(r[1] for r in results), sum(r[2] for r in results)
    return {"preset": preset, "threads": threads, "jobs": jobs, "target_pixels": target_pixels,
            "qp": qp, "weights": n, "wall_s": wall, "cpu_s": cpu,
            "mweights_per_s": n / wall / 1e6, "mweights_per_cpu_s": n / cpu / 1e6,
            "bpw": 8 * stored / n, "snr_db": 10 * math.log10(sig / err), "load_avg": load}


def run_vvc(layers: range, qp: int, settings: Sequence[tuple[str, int, int, int]]) -> list[dict[str, Any]]:
    tensors = smollm2_layer_weights(layers)
    rows = []
    for preset, threads, jobs, pixels in settings:
        row = encode_setting(tensors, qp, preset, threads, jobs, pixels)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


#: (preset, ffmpeg threads per process (0 = FFmpeg's default), tensors at once, frame pixels)
VVC_SETTINGS = [
    ("faster", 1, 1, 1 << 20), ("faster", 2, 1, 1 << 20), ("faster", 1, 2, 1 << 20),
    ("faster", 2, 2, 1 << 20), ("faster", 0, 2, 1 << 20),
    ("fast", 1, 2, 1 << 20),
    ("faster", 1, 2, 1 << 18), ("faster", 1, 2, 1 << 22),
]


# ----------------------------------------------------------------------------- main


def _table(rows: list[dict[str, Any]], cols: Sequence[str]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("synth", help="write a synthetic bf16 safetensors model")
    p.add_argument("path", type=Path)
    p.add_argument("--gib", type=float, default=2.1)
    p = sub.add_parser("run", help="pack/unpack throughput and memory")
    p.add_argument("src", help="'smollm2' or a model path")
    p.add_argument("--codec", nargs="+", default=["exact"])
    p.add_argument("--qp", type=int, default=33)
    p.add_argument("--preset", default=None)
    p.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--steps", nargs="+", default=["pack", "unpack", "decode"],
                   choices=["pack", "unpack", "decode"])
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "llmc_bench_speed")
    p.add_argument("--keep", action="store_true", help="keep the archives in --work")
    p = sub.add_parser("access", help="one tensor from small and large archives")
    p.add_argument("--synth", type=Path, default=None, help="a model written by `synth`")
    p.add_argument("--many", type=int, default=10000, help="tiny tensors of the 'many' case")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "llmc_bench_speed")
    p = sub.add_parser("vvc", help="VVC encoder speed knobs on SmolLM2 layers")
    p.add_argument("--layers", type=int, nargs=2, default=[0, 1], metavar=("FIRST", "STOP"))
    p.add_argument("--qp", type=int, default=33)
    p = sub.add_parser("_decode", help=argparse.SUPPRESS)
    p.add_argument("archive")
    p.add_argument("-j", "--jobs", type=int, default=1)
    p.add_argument("--report", type=Path, default=None)
    for sp in sub.choices.values():
        sp.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    rows: Any
    if args.cmd == "_decode":
        _decode_only(args.archive, args.jobs, args.report)
        return 0
    if args.cmd == "synth":
        rows = write_synth(args.path, args.gib)
        print(json.dumps(rows))
    elif args.cmd == "run":
        rows = run_pack_unpack(resolve_source(args.src), args.work, args.codec, args.qp, args.jobs,
                               args.preset, args.steps)
        print(_table(rows, ["what", "wall_s", "cpu_s", "mweights_per_s", "mweights_per_cpu_s",
                            "mb_per_s", "max_rss_mib", "peak_anon_mib", "bpw_tensors", "load_avg"]))
        if not args.keep:
            for codec in args.codec:
                for j in args.jobs:
                    (args.work / f"{codec}-j{j}.llmc").unlink(missing_ok=True)
    elif args.cmd == "access":
        rows = run_access(args.work, args.synth, args.many)
    else:
        rows = run_vvc(range(*args.layers), args.qp, VVC_SETTINGS)
        print(_table(rows, ["preset", "threads", "jobs", "target_pixels", "cpu_s", "wall_s",
                            "mweights_per_cpu_s", "mweights_per_s", "bpw", "snr_db", "load_avg"]))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
