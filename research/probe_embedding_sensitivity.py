"""Is the self-calibration Fisher a sane RD weight for a token embedding? (issue 15, item 4)

    PYTHONPATH=. python research/probe_embedding_sensitivity.py [--tokens 2048] [--snr 20] [--self]

llmc weighs each tensor's MSE by s = mean over its weights of the squared loss gradient on
4 sequences of 512 tokens (``rd.calibration``: self-sampled by default; here 4 windows of
lee_background after the evaluated region, or ``--self``). For an input embedding only
the rows of tokens seen get a gradient (at most 2,048 of SmolLM2's 49,152), so one may
doubt s. SmolLM2 ties its embedding to the output head, whose gradient is dense; the probe
splits the tied gradient into its input-side part (the gradient at the embedding's output,
scattered onto the rows of the tokens) and its head part, then checks each against what
it should predict: the loss increase from white noise of variance D on the tensor,
ΔL ≈ ½·D·n·F with F the mean Fisher per weight. The scale of s is arbitrary (squared
gradients of 512-token means), so what matters is that the ratio measured ΔL / (D·n·s) is
about the same for the embedding (each part) as for decoder matrices.

Noise is added at ``--snr`` dB to one tensor at a time (the input side alone: an untied
copy of the head is kept clean; the head alone: the other way round), and ΔL is measured
on the first ``--tokens`` tokens of lee_background (``tools.eval_ppl``'s windows).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from llmc_format.rd.calibration import self_generated
from tools.eval_ppl import _lee_cached, cached_smollm2, perplexity

PROBED = ("model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.down_proj.weight",
          "model.layers.15.self_attn.v_proj.weight", "model.layers.15.mlp.up_proj.weight",
          "model.layers.29.self_attn.o_proj.weight", "model.layers.29.mlp.down_proj.weight")
EMB = "model.embed_tokens.weight"


def fisher(model: torch.nn.Module, batches: list[torch.Tensor]) -> dict[str, float]:
    """Mean squared gradient per tensor as llmc computes it, plus the embedding split."""
    params = dict(model.named_parameters())
    emb = model.get_input_embeddings()
    sums = {n: 0.0 for n in (*PROBED, EMB, "embedding (input side)", "embedding (head side)")}
    captured: dict[str, torch.Tensor] = {}

    def keep(_m: torch.nn.Module, _i: object, out: torch.Tensor) -> None:
        out.retain_grad()
        captured["h"] = out

    for batch in batches:
        model.zero_grad(set_to_none=True)
        handle = emb.register_forward_hook(keep)
        try:
            model(input_ids=batch, labels=batch).loss.backward()
        finally:
            handle.remove()
        g_in = torch.zeros_like(params[EMB])
        g_in.index_add_(0, batch[0], captured["h"].grad[0])
        total = params[EMB].grad
        for n in PROBED:
            sums[n] += float(params[n].grad.double().pow(2).mean())
        sums[EMB] += float(total.double().pow(2).mean())
        sums["embedding (input side)"] += float(g_in.double().pow(2).mean())
        sums["embedding (head side)"] += float((total - g_in).double().pow(2).mean())
        rows = int(torch.unique(batch[0]).numel())
        print(f"  sequence: {rows} distinct tokens of {params[EMB].shape[0]}", flush=True)
    return {n: v / len(batches) for n, v in sums.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--snr", type=float, default=20.0)
    ap.add_argument("--self", action="store_true", help="self-sampled calibration, as llmc's default")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model, tokenizer = cached_smollm2()
    t0 = time.time()
    if args.self:
        batches = self_generated(model, tokenizer, 4, 512, 0)
    else:  # as rd.calibration does with a text: 4 evenly spaced 512-token windows
        ids = tokenizer(_lee_cached()[100000:160000], return_tensors="pt")["input_ids"][0]
        starts = [int(x) for x in torch.linspace(0, ids.numel() - 512, 4)]
        batches = [ids[s:s + 512][None] for s in starts]
    s = fisher(model, batches)
    print(f"calibration gradients: {time.time() - t0:.0f} s", flush=True)
    text = _lee_cached()
    base = math.log(perplexity(model, tokenizer, text, max_tokens=args.tokens))
    params = dict(model.named_parameters())
    head = model.get_output_embeddings()
    print(f"base loss {base:.4f}\n")
    print(f"{'tensor':44s} {'s (mean g^2)':>13s} {'n':>10s} {'dL meas.':>9s} {'dL/(D n s)':>11s}")
    gen = torch.Generator().manual_seed(1)
    for name in (*PROBED, EMB, "embedding (input side)", "embedding (head side)"):
        w = params[EMB if name.startswith("embedding") else name]
        original = w.detach().clone()
        var = float(original.double().pow(2).mean()) / 10 ** (args.snr / 10)
        noise = torch.randn(original.shape, generator=gen) * math.sqrt(var)
        untied = name.startswith("embedding")
        with torch.no_grad():
            if untied:  # separate head and input weights, noise on one of them only
                head.weight = torch.nn.Parameter(original.clone())
            target = head.weight if name == "embedding (head side)" else w
            target.add_(noise)
        try:
            loss = math.log(perplexity(model, tokenizer, text, max_tokens=args.tokens))
        finally:
            with torch.no_grad():
                w.copy_(original)
                if untied:
                    head.weight = w  # tie again
        d_loss = loss - base
        pred = var * original.numel() * s[name]
        print(f"{name:44s} {s[name]:13.4e} {original.numel():10d} {d_loss:9.4f} "
              f"{d_loss / pred:11.4e}", flush=True)


if __name__ == "__main__":
    main()
