"""SmolLM2-135M perplexity after a lossy llmc round trip, at uniform VVC QPs.

Why: weight SNR is only a proxy; what a user cares about is the model. This runs the real
path end to end — ``llmc_format.pack`` straight from the GGUF (the default policy codes the
210 decoder Linear weights lossy and keeps embeddings, norms and everything small exact),
``llmc_format.load_file``, then the fixed perplexity protocol of ``tools/eval_ppl.py`` (first
8192 tokens of the Lee corpus, independent 1024-token windows) with the decoded tensors in
place of the originals.

Reported per QP: all-in bits per weight over the lossy tensors (every blob: bitstreams and
affine parameters), their weighted SNR against the fp32 source, the perplexity, the archive
size and the pack time (wall and CPU, encoders included). The exact tensors are checked to
come back bit-identical to the model's.

    python tools/eval_lossy_ppl.py --qps 28,33,39
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make `tools` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import llmc_format
from llmc_format.codecs.stages import is_lossless
from llmc_format.errors import LlmcError
from llmc_format.metrics import error_energy, snr_record
from tools.bench_lossy import Clock, parse_layers
from tools.eval_ppl import cached_smollm2, perplexity_with_weights
from tools.models import SMOLLM2_N_LAYERS, smollm2_gguf_path, smollm2_linear_names


def lossless_patterns(layers: set[int] | None) -> tuple[str, ...]:
    """Globs keeping every decoder layer outside ``layers`` exact (None: no restriction)."""
    if layers is None:
        return ()
    return tuple(f"model.layers.{i}.*" for i in range(SMOLLM2_N_LAYERS) if i not in layers)


def evaluate(archive: Path, params: dict[str, Any]) -> dict[str, Any]:
    """Rate, SNR and perplexity of the model decoded from ``archive``."""
    decoded = llmc_format.load_file(archive)
    lossy: dict[str, np.ndarray] = {}
    n = nbytes = 0
    signal = noise = 0.0
    with llmc_format.safe_open(archive) as f:
        for name in f.keys():
            entry = f.info(name)
            if "alias_of" in entry:
                continue
            source = params[name].detach().numpy()
            if is_lossless(entry["pipeline"]):
                if decoded[name].tobytes() != source.astype(decoded[name].dtype).tobytes():
                    raise LlmcError(f"tensor {name!r} is stored losslessly but does not match the model")
                continue
            lossy[name] = decoded[name]
            n += source.size
            nbytes += sum(b["length"] for b in entry["blobs"])
            s, e = error_energy(source, decoded[name])
            signal, noise = signal + s, noise + e
    ppl = perplexity_with_weights(lossy)
    return {"lossy_tensors": len(lossy), "lossy_weights": n, "lossy_bytes": nbytes,
            "bpw": 8.0 * nbytes / n if n else None, "snr_db": snr_record(signal, noise),
            "perplexity": ppl, "file_bytes": archive.stat().st_size,
            "names": sorted(lossy)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--qps", default="28,33,39", help="comma list of VVC QPs")
    parser.add_argument("--codec", default="vvc", choices=("vvc", "hevc", "av1"))
    parser.add_argument("--preset", default=None, help="encoder preset (default: the codec's)")
    parser.add_argument("--vvenc-params", help="libvvenc Key=Value:... for vvc (default: the "
                        "codec's; '' for none)")
    parser.add_argument("--jobs", "-j", type=int, default=2, help="tensors encoded at once")
    parser.add_argument("--layers", help="code only these decoder layers lossy, e.g. 0-3 "
                        "(default: all 30)")
    parser.add_argument("--keep", type=Path, help="keep the archives in this directory")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    qps = [int(q) for q in args.qps.split(",") if q.strip()]
    layers = parse_layers(args.layers)

    command = "tools/eval_lossy_ppl.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    print(f"# {command}\n# {os.cpu_count()} cores, load {os.getloadavg()}", flush=True)
    model, _ = cached_smollm2()
    params = {k: v for k, v in model.named_parameters()}
    t0 = time.perf_counter()
    base = perplexity_with_weights({})
    print(f"# fp32 perplexity {base:.2f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    rows: list[dict[str, Any]] = [{"qp": None, "bpw": 32.0, "snr_db": None, "perplexity": base}]
    head = (f"{'codec':5} {'QP':>4} {'tensors':>7} {'bpw':>6} {'SNR dB':>7} {'perplexity':>10} "
            f"{'file MB':>8} {'pack s':>7} {'pack CPU s':>10}")
    print(head + "\n" + "-" * len(head))
    print(f"{'fp32':5} {'-':>4} {'-':>7} {32.0:6.3f} {'-':>7} {base:10.2f}", flush=True)
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="llmc-ppl-"))
    workdir.mkdir(parents=True, exist_ok=True)
    expected = set(smollm2_linear_names(None if layers is None else sorted(layers)))
    for qp in qps:
        archive = workdir / f"smollm2-{args.codec}-qp{qp}.llmc"
        policy: dict[str, Any] = {"lossless_patterns": lossless_patterns(layers)}
        if args.preset:
            policy["preset"] = args.preset
        if args.vvenc_params is not None:
            policy["video"] = {"vvenc_params": args.vvenc_params}
        clock = Clock()
        with clock:
            llmc_format.pack(smollm2_gguf_path(), archive, codec=args.codec, qp=qp,
                             jobs=args.jobs, **policy)
        res = evaluate(archive, params)
        if set(res["names"]) != expected:
            print(f"# warning: lossy tensors differ from the decoder Linear weights: "
                  f"{sorted(set(res['names']) ^ expected)[:5]}", flush=True)
        res.update(qp=qp, codec=args.codec, pack_wall_s=clock.wall, pack_cpu_s=clock.cpu)
        del res["names"]
        rows.append(res)
        print(f"{args.codec:5} {qp:4d} {res['lossy_tensors']:7d} {res['bpw']:6.3f} "
              f"{res['snr_db']:7.2f} {res['perplexity']:10.2f} {res['file_bytes'] / 1e6:8.2f} "
              f"{clock.wall:7.0f} {clock.cpu:10.0f}", flush=True)
        if not args.keep:
            archive.unlink()
    if args.json:
        args.json.write_text(json.dumps({"command": command, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
