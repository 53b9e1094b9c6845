"""Per-tensor sensitivity from a calibration text: mean squared gradient of the loss.

Radio weighs each weight matrix's distortion by how much the loss reacts to it: to second
order, the expected loss increase from adding independent noise of variance D to the
weights of tensor i is ½·D·Σ_j E[g_j²] (the diagonal Fisher information). So the
allocator minimizes Σ_i s_i·n_i·D_i with s_i the mean of g² over tensor i's weights,
averaged over a few sequences of the calibration text. The model is built with
transformers from the source's own config.json and tokenizer attachments and its tensors
(as float32), so this works for any causal LM transformers can instantiate — with the
classes transformers ships: the config is read as JSON (``io.hfconfig``) and custom code
an archive or model directory brings along is never imported.

Without a text (``text=SELF``, the CLI's ``--calibration self``) the model writes its own:
a few sequences sampled from it, starting from its BOS token, with a fixed seed. The
gradients then measure sensitivity on the model's own output distribution — no user data,
yet the same ranking of tensors a real text gives (docs/results/rd.md).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llmc_format.errors import SourceError
from llmc_format.io.base import Source

#: ``text`` value asking for self-generated calibration sequences
SELF = "self"

#: progress(step, item, done, total): the steps are "calibration: building the model",
#: "calibration: loading weights", "calibration: generating" (tokens) and
#: "calibration: gradients" (module forwards and tensor gradients, per sequence)
Progress = Callable[[str, str, int, int], None]


@dataclass
class Statistics:
    """What one calibration pass measures (all from the same sequences and backward passes).

    ``sensitivity``: per tensor, the mean of g² over its weights (the per-tensor diagonal
    Fisher the RD allocator weighs each tensor's MSE by). Per weight matrix of an
    ``nn.Linear`` (shape ``(out, in)``): ``input_power[n][j]`` = E[x_j²], the mean square
    of input channel j over every calibration token (a linear layer's output error is
    (W − Ŵ)·x, so column j's error reaches the output scaled by x_j); ``fisher_cols[n][j]``
    = mean over rows i of g_ij², ``fisher_rows[n][i]`` = mean over columns j (the
    per-element Fisher summed along one axis: where inside the tensor the loss feels an
    error). Vectors are float64 numpy arrays.
    """

    sensitivity: dict[str, float]
    input_power: dict[str, np.ndarray] = field(default_factory=dict)
    fisher_cols: dict[str, np.ndarray] = field(default_factory=dict)
    fisher_rows: dict[str, np.ndarray] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain data (for a cache file); ``from_json`` reads it back exactly (float64 repr)."""
        vec = {k: {n: [float(x) for x in v] for n, v in getattr(self, k).items()}
               for k in ("input_power", "fisher_cols", "fisher_rows")}
        return {"format": STATISTICS_FORMAT, "sensitivity": dict(self.sensitivity), **vec}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Statistics:
        """The inverse of ``to_json``; a ValueError when ``d`` is not that format."""
        if not isinstance(d, Mapping) or d.get("format") != STATISTICS_FORMAT:
            raise ValueError(f"not calibration statistics of format {STATISTICS_FORMAT}")
        vec = {k: {str(n): np.asarray(v, dtype=np.float64) for n, v in d[k].items()}
               for k in ("input_power", "fisher_cols", "fisher_rows")}
        return cls({str(n): float(v) for n, v in d["sensitivity"].items()}, **vec)


#: version tag of ``Statistics.to_json`` (caches of an older layout are recomputed)
STATISTICS_FORMAT = "llmc-calibration-statistics-1"


def sensitivities(source: Source, text: str, *, sequences: int = 4, seq_len: int = 512,
                  names: set[str] | None = None, seed: int = 0,
                  progress: Progress | None = None) -> dict[str, float]:
    """Mean squared gradient of the causal-LM loss per tensor (``names``: which to report).

    ``text`` is the calibration text, or ``SELF`` for sequences the model samples itself
    (``seed`` makes them, and so the archive, reproducible). ``progress`` hears of every
    tensor loaded, every token generated and every gradient computed: on a small CPU this
    step takes minutes, and a progress display must keep moving through it.
    """
    return statistics(source, text, sequences=sequences, seq_len=seq_len, names=names,
                      seed=seed, progress=progress).sensitivity


def statistics(source: Source, text: str, *, sequences: int = 4, seq_len: int = 512,
               names: set[str] | None = None, seed: int = 0,
               progress: Progress | None = None) -> Statistics:
    """``sensitivities`` and, in the same pass, the per-channel statistics of every
    ``nn.Linear`` weight among ``names`` (``Statistics``): input second moments from
    forward pre-hooks, Fisher row/column means from the gradients already computed."""
    report = progress or (lambda step, item, done, total: None)
    # importing transformers and building the model take seconds (minutes on a busy
    # machine) without a way to report inside them: at least the step is named
    report("calibration: building the model", "", 0, 0)
    attachments = list(source.attachments())
    if not any(rel == "config.json" for rel, _ in attachments):  # before importing anything
        raise SourceError("no config.json to build the model from: --calibration needs the "
                          "model's config.json and tokenizer (pack a Hugging Face directory "
                          "or a GGUF file)")
    try:
        import torch
        import transformers
    except ImportError as exc:  # pragma: no cover - both are dependencies of the hf extra
        raise SourceError(f"--calibration needs transformers and torch: {exc}") from None
    from llmc_format.io.attachments import write_attachments
    from llmc_format.io.hfconfig import NO_REMOTE_CODE, build_config
    from llmc_format.io.torchconv import to_torch

    config_json = next(data for rel, data in attachments if rel == "config.json")
    with tempfile.TemporaryDirectory(prefix="llmc-calib-") as tmp:
        # the tokenizer loads from files only; names are checked (no '../x' escapes)
        write_attachments(attachments, tmp)
        verbosity = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()  # its advice is not the user's business here
        try:
            config = build_config(config_json, "--calibration: config.json")
            tokenizer = transformers.AutoTokenizer.from_pretrained(
                tmp, local_files_only=True, **NO_REMOTE_CODE)
            model = transformers.AutoModelForCausalLM.from_config(
                config, dtype=torch.float32, **NO_REMOTE_CODE)
        except SourceError:
            raise
        except Exception as exc:
            raise SourceError(f"--calibration: transformers cannot build this model: {exc}") from None
        finally:
            transformers.logging.set_verbosity(verbosity)
    params = dict(model.named_parameters())
    missing = sorted((names or set()) - set(params))
    if missing:  # before any generation or gradient: say so at once
        raise SourceError(f"--calibration: the model transformers builds has no parameter "
                          f"{missing[0]!r} ({len(missing)} lossy tensors missing)")
    with torch.no_grad():
        loaded = 0
        for name, entry in source.tensors():
            if name in params:
                params[name].copy_(to_torch(np.asarray(entry(), dtype=np.float32)))
                loaded += 1
                report("calibration: loading weights", name, loaded, len(params))
    model.tie_weights()
    model.train(False)
    if text == SELF:
        batches = self_generated(model, tokenizer, sequences, seq_len, seed, progress=report)
    else:
        ids = tokenizer(text, return_tensors="pt")["input_ids"][0]
        if ids.numel() < 2:
            raise SourceError("--calibration text is too short")
        starts = np.linspace(0, max(0, ids.numel() - seq_len), sequences).astype(int)
        batches = [ids[s: s + seq_len][None] for s in starts]
    sums = {n: torch.zeros((), dtype=torch.float64) for n in params}
    trainable = [p for p in params.values() if p.requires_grad]
    # one step per module run forward and per gradient computed: the display moves
    # every fraction of a second even where one sequence takes many seconds
    owners = [m for m in model.modules() if next(m.parameters(recurse=False), None) is not None]
    per_batch = len(owners) + len(trainable)
    steps = len(batches) * per_batch
    done = [0]
    item = [""]

    def step(*_: Any) -> None:
        done[0] += 1
        report("calibration: gradients", item[0], min(done[0], steps), steps)

    # the Linear layers whose weight is reported: their inputs' second moments
    linears = {f"{m_name}.weight" if m_name else "weight": mod
               for m_name, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)}
    linears = {n: m for n, m in linears.items()
               if n in params and params[n].ndim == 2 and (names is None or n in names)}
    power = {n: torch.zeros(m.in_features, dtype=torch.float64) for n, m in linears.items()}
    tokens = {n: 0 for n in linears}
    cols = {n: torch.zeros(params[n].shape[1], dtype=torch.float64) for n in linears}
    rows = {n: torch.zeros(params[n].shape[0], dtype=torch.float64) for n in linears}

    def pre_hook(n: str) -> Callable[..., None]:
        def hook(module: Any, args: tuple[Any, ...]) -> None:
            x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
            power[n] += x.pow(2).sum(0)
            tokens[n] += x.shape[0]
        return hook

    hooks = [p.register_hook(lambda g: step()) for p in trainable]
    hooks += [m.register_forward_hook(lambda *a: step()) for m in owners]
    hooks += [m.register_forward_pre_hook(pre_hook(n)) for n, m in linears.items()]
    try:
        for b, batch in enumerate(batches):
            model.zero_grad(set_to_none=True)
            done[0] = b * per_batch
            item[0] = f"sequence {b + 1}/{len(batches)}"
            model(input_ids=batch, labels=batch).loss.backward()
            for n, p in params.items():
                if p.grad is not None:
                    g2 = p.grad.double().pow(2)
                    sums[n] += g2.mean()
                    if n in cols:
                        cols[n] += g2.mean(0)
                        rows[n] += g2.mean(1)
    finally:
        for h in hooks:
            h.remove()
    out = {n: float(v) / len(batches) for n, v in sums.items()}
    nb = len(batches)
    return Statistics(
        {n: v for n, v in out.items() if names is None or n in names},
        {n: (power[n] / max(tokens[n], 1)).numpy() for n in linears},
        {n: (cols[n] / nb).numpy() for n in linears},
        {n: (rows[n] / nb).numpy() for n in linears})


def self_generated(model: Any, tokenizer: Any, sequences: int, seq_len: int, seed: int,
                   progress: Progress | None = None) -> list[Any]:
    """``sequences`` token sequences of ``seq_len`` sampled from ``model`` from its BOS;
    ``progress`` hears of every token generated (all sequences advance together)."""
    import torch
    import transformers

    class _Report(transformers.StoppingCriteria):  # never stops: reports each step
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            if progress is not None:
                progress("calibration: generating", f"{sequences} sequences",
                         int(input_ids.shape[1]) - 1, seq_len - 1)
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    start = tokenizer.bos_token_id
    if start is None:
        start = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    state = torch.random.get_rng_state()  # leave the caller's global RNG as it was
    try:
        torch.manual_seed(seed)
        with torch.no_grad():
            out = model.generate(
                torch.full((sequences, 1), start, dtype=torch.long),
                attention_mask=torch.ones((sequences, 1), dtype=torch.long),
                do_sample=True, top_k=0, top_p=1.0, temperature=1.0, max_new_tokens=seq_len - 1,
                min_new_tokens=seq_len - 1, pad_token_id=start,
                stopping_criteria=transformers.StoppingCriteriaList([_Report()]))
    finally:
        torch.random.set_rng_state(state)
    return [row[None] for row in out]
