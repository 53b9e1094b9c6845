"""The ``llmc`` command: pack, unpack, inspect, verify, extract.

Commands parse arguments, call ``llmc_format.pipeline`` and render with rich; they hold no
logic of their own. Exit codes: 0 success; 1 ``verify`` found a problem; 2 bad usage
(unknown option or option value); 3 an llmc error (unreadable input, corrupt archive,
missing encoder, an output that exists — a file for ``pack``, a non-empty directory for
``unpack`` — without ``--force``...); 130 interrupted.
Errors print as one line on stderr, never a traceback (set LLMC_DEBUG=1 for one).

numpy's BLAS runs single-threaded in the command (``OPENBLAS_NUM_THREADS=1`` unless the
environment says otherwise, set before numpy loads): llmc runs ``--jobs`` tensors at once
itself, and OpenBLAS threads spinning beside them cost ``blockdct``'s small matrix products
2.7x their CPU (214 vs 78 M weights per CPU-second, 2 cores).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import json
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup
from typer.exceptions import TyperException

import llmc_format
from llmc_format.errors import LlmcError
from llmc_format.units import format_size, parse_size


def _codec_help() -> str:
    """``pack --codec``'s help, naming every codec installed (plugins included).

    Listing them imports every codec module and entry point (~0.2 s), so it is done only
    when help is asked for, not on every start of the CLI.
    """
    text = ("exact (lossless; a GGUF's tensors keep their ggml types, unpack --format gguf "
            "returns the same file) or a lossy video codec: vvc, hevc, av1; ffv1 is a lossless "
            "video codec for comparison.")
    if not {"--help", "-h"} & set(sys.argv[1:]):
        return text
    try:
        from llmc_format.pipeline.policy import codec_choices

        return f"{text} Installed: {', '.join(codec_choices())}."
    except LlmcError as exc:  # a broken plugin: say so in the help rather than fail
        return f"{text} ({exc})"


EXIT_VERIFY_FAILED = 1
EXIT_USAGE = 2
EXIT_LLMC_ERROR = 3
EXIT_INTERRUPTED = 130


def printable(value: object) -> str:
    """``value`` as text safe for a terminal: control characters (escape sequences,
    newlines, carriage returns, bidi overrides) are shown as ``\\xNN``/``\\uNNNN``.

    Names come from archives and model directories: printed raw, ``\\x1b[2J`` clears
    the screen and a newline forges a line of output. Rich markup is not interpreted
    where this text is printed (``Text``), so ``x[/]`` is printed as it is.
    """
    s = str(value)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   if ord(c) < 0x10000 else f"\\U{ord(c):08x}" for c in s)


def plain(value: object, style: str = "") -> Text:
    """A rich ``Text`` of ``printable(value)``: no markup, no escapes reach the terminal."""
    return Text(printable(value), style=style)


def _error_line(exc: object, prefix: str = "error:") -> None:
    err.print(Text.assemble((prefix, "bold red"), " ", printable(exc)), highlight=False,
              soft_wrap=True)


def _os_error_text(exc: OSError) -> str:
    """``path: reason`` for an OSError (disk full, permission denied, ...)."""
    where = exc.filename if exc.filename is not None else ""
    reason = exc.strerror or str(exc)
    return f"{where}: {reason}" if where else reason


class _OneLineErrors(TyperGroup):
    """Every command runs inside this: whatever escapes it becomes one line on stderr and
    the documented exit code (3 an llmc or system error, 130 interrupted), never a
    traceback (``LLMC_DEBUG=1`` shows it). Usage errors (2) and ``Exit`` pass through."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (TyperException, typer.Exit, typer.Abort):  # usage errors (2), exits
            raise
        except KeyboardInterrupt:
            if os.environ.get("LLMC_DEBUG"):
                raise
            err.print("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except LlmcError as exc:
            if os.environ.get("LLMC_DEBUG"):
                raise
            _error_line(exc)
            raise typer.Exit(EXIT_LLMC_ERROR) from None
        except OSError as exc:  # disk full, permission denied, a path that vanished...
            if os.environ.get("LLMC_DEBUG"):
                raise
            _error_line(_os_error_text(exc))
            raise typer.Exit(EXIT_LLMC_ERROR) from None
        except Exception as exc:  # a bug: still one line, and said to be one
            if os.environ.get("LLMC_DEBUG"):
                raise
            _error_line(f"{type(exc).__name__}: {exc} (a bug in llmc; LLMC_DEBUG=1 shows "
                        "the traceback)", "internal error:")
            raise typer.Exit(EXIT_LLMC_ERROR) from None


app = typer.Typer(
    cls=_OneLineErrors,
    name="llmc",
    help="Archive LLM weights in one .llmc file: lossless (exact), or lossy with video "
    "codecs (VVC/H.266, HEVC, AV1) at a chosen QP.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)
out = Console()
err = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        out.print(f"llmc {llmc_format.__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """llmc: compress and archive model weights."""


@contextmanager
def _errors() -> Iterator[None]:
    """Turn llmc errors into one clear line and exit code 3."""
    try:
        yield
    except LlmcError as exc:
        if os.environ.get("LLMC_DEBUG"):
            raise
        _error_line(exc)
        raise typer.Exit(EXIT_LLMC_ERROR) from None
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(EXIT_INTERRUPTED) from None


@contextmanager
def _progress(quiet: bool, what: str) -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress bar with ETA on stderr; a no-op callback when quiet."""
    if quiet:
        yield lambda name, done, total: None
        return
    bar = Progress(
        TextColumn(f"{what} [progress.description]{{task.description}}"),
        BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
        console=err, transient=True,
    )
    task = bar.add_task("", total=None)
    with bar:
        def update(name: str, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, description=name[-40:])

        yield update


def _parse_meta(items: list[str]) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LlmcError(f"--meta expects KEY=VALUE, got {item!r}")
        try:
            meta[key] = json.loads(value)  # typed: numbers, booleans, lists...
        except json.JSONDecodeError:
            meta[key] = value
    return meta


# ----------------------------------------------------------------------------- pack


@app.command()
def pack(
    src: Annotated[Path, typer.Argument(help="A .safetensors file, a Hugging Face model "
                                        "directory, a torch state dict (.bin/.pt) or a .gguf file.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The .llmc file to write.")],
    codec: Annotated[str, typer.Option(help=_codec_help())] = "exact",
    qp: Annotated[int, typer.Option(help="Quantizer of the lossy codec (higher = smaller); "
                                    "ignored with a target.")] = 37,
    bpw: Annotated[float | None, typer.Option(help="Target: all-in bits per weight of the "
                                              "matrices the RD allocation decides (every "
                                              "float matrix of at least --min-lossy-numel "
                                              "weights, embeddings and output heads included, "
                                              "less --lossless ones; lossy or kept exact): "
                                              "their bitstreams, quantization parameters and "
                                              "exact blobs plus the index; norms, biases and "
                                              "tokenizer files come on top. Each tensor gets a "
                                              "QP, or stays exact in its source encoding.")] = None,
    size: Annotated[str | None, typer.Option(help="Target: whole-file size, e.g. 60MB (every "
                                             "byte: tensors, index, tokenizer files).")] = None,
    snr: Annotated[float | None, typer.Option(help="Target: every lossy tensor at least this "
                                              "SNR in dB.")] = None,
    weighting: Annotated[str, typer.Option(help="RD weighting per tensor without --calibration: "
                                           "auto (default: --calibration self when "
                                           "transformers can build the model, up to 2 B "
                                           "weights, else nmse), nmse (relative error) or "
                                           "mse (equal weight per parameter).")] = "auto",
    allow_over: Annotated[bool, typer.Option(help="Let a size/bpw target be exceeded by up to "
                                             "the 2% tolerance.")] = False,
    calibration: Annotated[str | None, typer.Option(help="Text file: weigh each tensor by its "
                                                    "squared loss gradient on it (needs a model "
                                                    "transformers can build); 'self': on text "
                                                    "the model samples itself (no data needed).")] = None,
    preset: Annotated[str | None, typer.Option(help="Encoder preset: vvc faster (default), fast, "
                                               "medium, slow, slower; hevc ultrafast ... medium "
                                               "(default) ... placebo; av1 a number (svt 0-13, "
                                               "default 8).")] = None,
    bits: Annotated[int, typer.Option(help="Bit depth of the affine quantization before video coding.")] = 10,
    scaling: Annotated[str | None, typer.Option(help="Affine codes with one scale per row "
                                                "(default with --qp: one QP for all) or per "
                                                "tensor (needs a target, which gives each "
                                                "tensor its own QP). With a target and no "
                                                "--scaling, --transform auto codes blockdct.")] = None,
    transform: Annotated[str, typer.Option(help="How lossy tensors become video samples: dct "
                                           "(codes of each 32x32 block's inverse DCT, one "
                                           "scale per tensor: the codec then quantizes the "
                                           "weights themselves; needs a target), none (affine "
                                           "codes, --scaling), or auto (default: dct with a "
                                           "target and vvc/hevc, else none).")] = "auto",
    lossy: Annotated[list[str] | None, typer.Option("--lossy", help="Glob of tensor names to code lossy "
                                                    "(e.g. '*embed_tokens*'); repeatable.")] = None,
    lossless: Annotated[list[str] | None, typer.Option("--lossless", help="Glob of tensor names to "
                                                       "keep exact (outside a target's "
                                                       "allocation); wins over --lossy; "
                                                       "repeatable.")] = None,
    min_lossy_numel: Annotated[int, typer.Option(help="Tensors with fewer elements stay exact.")] = 16384,
    jobs: Annotated[int | None, typer.Option("-j", "--jobs", help="Tensors encoded at once "
                                             "(default: all cores; with --executor ray, all "
                                             "the cluster's CPUs).")] = None,
    executor: Annotated[str, typer.Option(help="Where tensors are encoded: local (threads) or "
                                          "ray (Ray workers, one task per tensor; needs "
                                          "pip install 'llmc-format[ray]'). The archive is "
                                          "the same bytes either way.")] = "local",
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster to join (e.g. auto, "
                                                    "ray://head:10001); default: $RAY_ADDRESS, "
                                                    "else a Ray instance on this machine.")] = None,
    meta: Annotated[list[str] | None, typer.Option("--meta", help="KEY=VALUE user metadata (VALUE "
                                                   "parsed as JSON when it is); repeatable.")] = None,
    timestamp: Annotated[bool, typer.Option(help="Record the creation time and each tensor's "
                                            "encode/decode seconds (off: the archive is "
                                            "byte-identical across runs).")] = False,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite OUTPUT if it exists.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted pack of the same "
                                         "SRC with the same options (from OUTPUT's hidden .partial "
                                         "file and journal); the result is byte-identical to an "
                                         "uninterrupted pack. Starts over if there is nothing to "
                                         "resume.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")] = False,
) -> None:
    """Pack a model into one .llmc archive."""
    from llmc_format.pipeline.executor import BACKENDS, make_executor
    from llmc_format.pipeline.pack import pack as do_pack
    from llmc_format.pipeline.policy import Policy

    if executor not in BACKENDS:
        raise typer.BadParameter(f"must be one of {', '.join(BACKENDS)}", param_hint="--executor")
    if ray_address is not None and executor != "ray":
        raise typer.BadParameter("needs --executor ray", param_hint="--ray-address")
    if scaling not in (None, "row", "tensor"):
        raise typer.BadParameter("must be row or tensor", param_hint="--scaling")
    if transform not in ("auto", "none", "dct"):
        raise typer.BadParameter("must be auto, none or dct", param_hint="--transform")
    if transform == "dct" and scaling is not None:
        raise typer.BadParameter("--transform dct has its own per-tensor scale", param_hint="--scaling")
    with _errors():
        if output.exists() and not force:
            raise LlmcError(f"{output} exists; pass --force to overwrite it")
        policy = Policy(codec=codec, qp=qp, preset=preset, bits=bits,
                        affine={"granularity": scaling} if scaling else {}, transform=transform,
                        min_lossy_numel=min_lossy_numel, lossy_patterns=tuple(lossy or ()),
                        lossless_patterns=tuple(lossless or ()))
        created = None
        if timestamp:
            from datetime import UTC, datetime

            created = datetime.now(UTC).isoformat(timespec="seconds")
        targeted = any(v is not None for v in (bpw, size, snr))
        if (scaling == "tensor" or transform == "dct") and not targeted:
            what = "--scaling tensor" if scaling == "tensor" else "--transform dct"
            raise LlmcError(f"{what} needs a target (--bpw, --size or --snr): with one QP for "
                            "every tensor, a tensor's outliers would set the step of all its "
                            "weights (docs/results/tuning.md §2)")
        if resume and targeted:
            raise LlmcError("--resume works with a fixed --qp pack, not with --bpw/--size/--snr")
        with make_executor(executor, jobs=jobs, address=ray_address) as ex, \
                _progress(quiet, "packing") as update:
            if targeted:
                from llmc_format.io import open_source
                from llmc_format.pipeline.target import Target, pack_to_target

                target = Target.parse(size=size, bpw=bpw, snr=snr, allow_over=allow_over)
                with open_source(src) as source:
                    rd = pack_to_target(
                        source, output, target, policy=policy, jobs=jobs, weighting=weighting,
                        calibration=_calibration_text(calibration),
                        user_metadata=_parse_meta(meta or []), created=created,
                        executor=ex, record_timings=timestamp,
                        progress=lambda ev, name, d, t: update(f"{ev} {name}", d, t))
            else:
                try:
                    do_pack(src, output, policy=policy, jobs=jobs, executor=ex,
                            record_timings=timestamp,
                            user_metadata=_parse_meta(meta or []), created=created,
                            progress=lambda ev, name, d, t: update(name, d, t), resume=resume)
                except (LlmcError, KeyboardInterrupt):
                    from llmc_format.container.journal import leftovers

                    if any(j.exists() for _, j in leftovers(output)):
                        err.print("note: finished tensors were kept; rerun the same command "
                                  "with --resume to continue")
                    raise
        if not quiet:
            _print_summary(output)
            if targeted:
                _print_target(target.kind, target.value, rd)


def _print_target(kind: str, value: float, rd: dict[str, Any]) -> None:
    """What a target pack achieved, in the units the targets count (README "Targets")."""
    a = rd["achieved"]
    out.print(f"RD target {kind}={value:g}: {rd['passes']} pass(es); "
              f"{a['rd_bpw_all_in']:.3f} bits/weight all-in over the {a['rd_weights']:,} "
              f"weights the allocation decides (what --bpw counts): {a['lossy_tensors']} "
              f"tensors lossy, {a['kept_exact_tensors']} kept exact "
              f"({format_size(a['kept_exact_bytes'])}), min SNR {_fmt(a['min_snr_db'])} dB; "
              f"other tensors {format_size(a['lossless_tensor_bytes'])}, attachments "
              f"{format_size(a['attachment_bytes'])}; whole file {a['model_bpw']:.3f} "
              f"bits/weight over all {a['model_weights']:,} weights",
              highlight=False, soft_wrap=True)


def _calibration_text(option: str | None) -> str | None:
    """The --calibration text: a file's contents, or ``SELF`` for self-generated text."""
    from llmc_format.rd.calibration import SELF

    if option is None or option == SELF:
        return option
    path = Path(option)
    if not path.is_file():
        raise LlmcError(f"--calibration: no such file {option!r} (or give 'self')")
    return path.read_text(errors="replace")


def _print_summary(path: Path) -> None:
    from llmc_format.pipeline.inspect import summarize

    s = summarize(path)
    out.print(plain(f"wrote {path}: {s['tensors']} tensors, {format_size(s['file_bytes'])} "
                    f"({s['file_bpw']:.3f} bits/weight all-in); {_ratio_text(s)}"))
    if s["input_bytes"] and s["file_bytes"] > s["input_bytes"]:
        err.print(f"warning: the archive ({format_size(s['file_bytes'])}) is larger than its "
                  f"input ({format_size(s['input_bytes'])})")


def _ratio_text(s: dict[str, Any]) -> str:
    """Ratio against the input files first; against the decoded tensors (e.g. a GGUF's
    float32 expansion) second, since that is not what the user started from."""
    decoded = f"ratio {s['ratio']:.3f} vs the decoded tensors' {format_size(s['source_bytes'])}"
    if not s.get("input_bytes"):
        return decoded
    return (f"ratio {s['input_ratio']:.3f} vs the input's {format_size(s['input_bytes'])} "
            f"({decoded})")


# ----------------------------------------------------------------------------- unpack


@app.command()
def unpack(
    archive: Annotated[Path, typer.Argument(help="The .llmc file.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Directory to write.")],
    fmt: Annotated[str, typer.Option("--format", help="safetensors (what save_pretrained writes), "
                                     "pt (pytorch_model.bin) or gguf (model.gguf: the packed GGUF "
                                     "byte for byte when the archive holds it losslessly, else "
                                     "float tensors under the archive's names).")] = "safetensors",
    dtype: Annotated[str | None, typer.Option(help="Cast float tensors to bf16, fp16 or fp32 "
                                              "(default: the stored dtype).")] = None,
    shard_size: Annotated[str | None, typer.Option(help="Split safetensors/pt into shards of at "
                                                   "most this size, e.g. 2GB.")] = None,
    tied: Annotated[str, typer.Option(help="Tied weights (stored once): auto leaves out those "
                                      "transformers re-ties from config.json, as save_pretrained "
                                      "does; copy writes them all; drop writes none.")] = "auto",
    jobs: Annotated[int | None, typer.Option("-j", "--jobs", help="Tensors decoded at once, "
                                             "output order kept (default: all cores).")] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Write into OUTPUT even if it is a "
                                        "non-empty directory.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")] = False,
) -> None:
    """Unpack an archive to a model directory (weights plus config/tokenizer attachments).

    The directory loads with transformers' from_pretrained (safetensors or pt). An existing
    non-empty OUTPUT is refused (exit 3) unless --force: then weight files of llmc's
    formats in it are replaced and other files kept, unless the archive overwrites them.
    """
    from llmc_format.pipeline import unpack as up
    from llmc_format.runtime import default_jobs

    if fmt not in up.FORMATS:
        raise typer.BadParameter(f"must be one of {', '.join(up.FORMATS)}", param_hint="--format")
    if tied not in up.TIED_MODES:
        raise typer.BadParameter(f"must be one of {', '.join(up.TIED_MODES)}", param_hint="--tied")
    try:
        dtype = up.normalize_dtype(dtype)
        shard = parse_size(shard_size) if shard_size else None
    except LlmcError as exc:
        raise typer.BadParameter(str(exc), param_hint="--dtype/--shard-size") from None
    if shard is not None and fmt == "gguf":
        raise typer.BadParameter("GGUF is written as one file", param_hint="--shard-size")
    with _errors():
        if output.is_dir() and any(output.iterdir()) and not force:
            raise LlmcError(f"{output} is a non-empty directory; pass --force to write into it "
                            f"(weight files there are replaced, other files kept)")
        with _progress(quiet, "unpacking") as update:
            result = up.unpack(archive, output, format=fmt, dtype=dtype, shard_size=shard,
                               tied=tied, progress=update, jobs=jobs or default_jobs())
    if not quiet:
        size = sum((output / f).stat().st_size for f in result.files)
        files = result.files[0] if len(result.files) == 1 else \
            f"{len(result.files) - 1} shards + {result.files[-1]}"
        out.print(plain(f"wrote {output}: {files} ({format_size(size)}), "
                        f"{len(result.attachments)} attachments"), highlight=False, soft_wrap=True)
        if result.tied_dropped:
            pairs = ", ".join(f"{a} (= {t})" for a, t in result.tied_dropped.items())
            out.print(plain(f"tied weights left out: {pairs}; {result.tied_reason}"),
                      highlight=False, soft_wrap=True)


# ----------------------------------------------------------------------------- inspect


def _jsonable(v: Any) -> Any:
    """JSON has no inf/nan: write them as strings."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, bytes):
        return v.hex()
    return v


def _print_json(data: Any) -> None:
    """JSON on stdout: highlighted on a terminal; plain ``json.dumps`` into a pipe or file,
    where rich's highlighting cost ~100x the text in memory (275 MB for 5,000 tensors)."""
    if out.is_terminal:
        out.print_json(data=data)
    else:
        sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _fmt(v: Any, spec: str = ".2f") -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return format(v, spec) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


@app.command()
def inspect(
    archive: Annotated[Path, typer.Argument(help="The .llmc file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    rd: Annotated[bool, typer.Option("--rd", help="Show the rate-distortion records: samples, "
                                     "chosen QP, predicted and achieved figures.")] = False,
    plot: Annotated[Path | None, typer.Option(help="Draw the RD curves and chosen points "
                                              "to this PNG.")] = None,
) -> None:
    """List tensors: dtype, shape, codec, stored bytes, bits per weight, QP, SNR; totals."""
    from llmc_format.pipeline.inspect import describe

    with _errors():
        d = describe(archive)
    if plot is not None:
        _plot_rd(d, plot)
    if as_json:
        _print_json(_jsonable(d))
        return
    if rd:
        _print_rd(d)
        return
    table = Table(title=plain(f"{archive} — format {d['format_version']}, "
                              f"{d['metadata'].get('tool', '?')}"))
    for col in ("tensor", "dtype", "shape", "codec", "stored", "bpw", "ratio", "QP", "SNR dB"):
        table.add_column(col, justify="right" if col not in ("tensor", "codec") else "left")
    for t in d["tensors"]:
        table.add_row(plain(t["name"]), t["dtype"], "x".join(map(str, t["shape"])) or "()",
                      plain(t["codec"]),
                      format_size(t["stored_bytes"]), _fmt(t["bpw"], ".3f"), _fmt(t["ratio"]),
                      _fmt(t.get("qp"), "d"), _fmt(t.get("snr_db")))
    out.print(table)
    s = d["summary"]
    out.print(
        f"{s['tensors']} tensors ({s['lossy_tensors']} lossy), {s['weights']:,} weights, "
        f"{len(d['attachments'])} attachments; file {format_size(s['file_bytes'])}, "
        f"{_ratio_text(s)}, {s['file_bpw']:.3f} bits/weight all-in"
    )
    _warn_rd_problems(d)


def _warn_rd_problems(d: dict[str, Any]) -> None:
    """One warning line per RD record inspect could not use (shown as '-')."""
    if d.get("rd_summary_problem"):
        _error_line(f"{d['rd_summary_problem']}: RD summary not shown", "warning:")
    for t in d["tensors"]:
        if t.get("rd_problem"):
            _error_line(f"tensor {t['name']!r}: RD record ignored: {t['rd_problem']}", "warning:")


def _print_rd(d: dict[str, Any]) -> None:
    rd = d["metadata"].get("rd")
    if rd and not d.get("rd_summary_problem"):
        out.print(plain(f"RD: target {rd['target']['kind']}={rd['target']['value']:g}, weighting "
                  f"{rd.get('weighting')}, lambda {_fmt(rd.get('lambda'), '.3g')}, "
                  f"{rd.get('passes')} pass(es)"), highlight=False)
    table = Table(title="rate-distortion per lossy tensor")
    for col in ("tensor", "samples (QP: bpw / SNR dB)", "QP", "predicted bpw", "bpw", "SNR dB"):
        table.add_column(col)
    for t in d["tensors"]:
        r = t.get("rd") or {}
        if "qp" not in r and not r.get("kept_exact"):
            continue
        energy = r.get("signal_energy")
        n = max(math.prod(t["shape"]), 1)
        samples = ", ".join(
            f"{q}: {b:.2f}" + (f" / {10 * math.log10(energy / (m * n)):.1f}" if energy and m else "")
            for q, b, m in r.get("samples", []))
        table.add_row(plain(t["name"]), samples or "-", str(r.get("qp", "exact")),
                      _fmt(r.get("predicted_bpw"), ".3f"), _fmt(r.get("bpw"), ".3f"),
                      _fmt(r.get("snr_db", math.inf if r.get("kept_exact") else None)))
    out.print(table)
    _warn_rd_problems(d)


def _plot_rd(d: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for t in d["tensors"]:
        r = t.get("rd") or {}
        if "qp" not in r:
            continue
        n = max(math.prod(t["shape"]), 1)
        energy = r.get("signal_energy") or 0
        pts = [(b, 10 * math.log10(energy / (m * n))) for _, b, m in r.get("samples", [])
               if energy and m]
        if pts:
            line = ax.plot(*zip(*pts, strict=True), "-", alpha=0.4, lw=1)[0]
            color = line.get_color()
        else:
            color = None
        if r.get("snr_db") is not None and math.isfinite(r["snr_db"]):
            ax.plot([r["bpw"]], [r["snr_db"]], "o", color=color, ms=4)
    ax.set_xlabel("bits per weight (bitstream + parameters)")
    ax.set_ylabel("SNR (dB)")
    ax.set_title(f"RD curves (samples) and chosen points — {Path(d['path']).name}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# ----------------------------------------------------------------------------- repack


@app.command()
def repack(
    archive: Annotated[Path, typer.Argument(help="A lossy .llmc file (made with a target or a QP).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The .llmc file to write.")],
    bpw: Annotated[float | None, typer.Option(help="Target bits per weight (all-in) of the "
                                              "archive's lossy tensors.")] = None,
    size: Annotated[str | None, typer.Option(help="Target whole-file size, e.g. 40MB.")] = None,
    snr: Annotated[float | None, typer.Option(help="Target SNR floor (dB) per lossy tensor, "
                                              "measured against the input archive.")] = None,
    repair: Annotated[bool, typer.Option("--repair", help="Instead of a target: copy the "
                                         "archive with encoder console text cut off its video "
                                         "blobs (what verify --strict reports), keeping each "
                                         "cut only if it decodes to the stored frame hash; "
                                         "lossless, nothing else changes.")] = False,
    weighting: Annotated[str, typer.Option(help="nmse (default) or mse.")] = "nmse",
    jobs: Annotated[int | None, typer.Option("-j", "--jobs")] = None,
    force: Annotated[bool, typer.Option("--force", "-f")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Re-encode a lossy archive to a smaller target from its recorded RD data (no source model)."""
    from llmc_format.pipeline.target import Target
    from llmc_format.pipeline.target import repack as do_repack

    if repair and any(v is not None for v in (bpw, size, snr)):
        raise typer.BadParameter("takes no --bpw/--size/--snr target", param_hint="--repair")
    with _errors():
        if output.exists() and not force:
            raise LlmcError(f"{output} exists; pass --force to overwrite it")
        if repair:
            _repair(archive, output, quiet)
            return
        target = Target.parse(size=size, bpw=bpw, snr=snr)
        with _progress(quiet, "repacking") as update:
            rd = do_repack(archive, output, target, jobs=jobs, weighting=weighting,
                           progress=lambda ev, name, d, t: update(f"{ev} {name}", d, t))
        if not quiet:
            _print_summary(output)
            _print_target(target.kind, target.value, rd)


def _repair(archive: Path, output: Path, quiet: bool) -> None:
    from llmc_format.pipeline.bitstreams import repair as do_repair

    with _progress(quiet, "repairing") as update:
        report = do_repair(archive, output, tool=f"llmc-format {llmc_format.__version__}",
                           progress=update)
    if quiet:
        return
    if report.output is None:
        out.print(f"nothing to repair: every video blob of {archive} is well-formed; "
                  f"{output} not written")
        return
    confirmed = sorted({d for v in report.repaired.values() for _, _, ds in v for d in ds})
    out.print(f"repaired {report.blobs} blob(s) of {len(report.repaired)} tensor(s), "
              f"{report.bytes_removed} bytes of console text removed; every cut blob decodes "
              f"to its stored frame hash ({', '.join(confirmed)}): {output}")


# ----------------------------------------------------------------------------- verify


@app.command()
def verify(
    archive: Annotated[Path, typer.Argument(help="The .llmc file.")],
    against: Annotated[Path | None, typer.Option(
        help="The source model: lossless tensors must be bit-identical, lossy ones match "
        "their recorded SNR.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable report.")] = False,
    strict: Annotated[bool, typer.Option(help="Also check every video blob's bitstream "
                                         "structure and decode it with the installed second "
                                         "decoders (VVdeC, libde265, aomdec/dav1d; "
                                         "docs/decoders.md).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
    signature: Annotated[Path | None, typer.Option(
        help="Also check this signature (from `llmc sign`) of the archive's exact bytes; "
        "needs --public-key.")] = None,
    public_key: Annotated[Path | None, typer.Option(
        help="The signer's EC public key (PEM) for --signature.")] = None,
) -> None:
    """Check every checksum and byte, decode every tensor; exit 1 if anything is wrong.

    Checksums prove integrity, not origin: add --signature/--public-key to check who
    signed the file (offline, OpenSSF model-signing)."""
    from llmc_format.pipeline.verify import verify as do_verify

    if (signature is None) != (public_key is None):
        err.print("[bold red]error:[/] --signature and --public-key go together")
        raise typer.Exit(2)
    with _errors(), _progress(quiet or as_json, "verifying") as update:
        report = do_verify(archive, against=against, progress=update, strict=strict)
        if signature is not None and public_key is not None:
            from llmc_format.errors import SignatureError
            from llmc_format.pipeline.signing import verify_archive_signature

            try:
                verify_archive_signature(archive, signature, public_key)
            except SignatureError as exc:
                report.fail(str(exc))
            else:
                report.signature = str(signature)
    if as_json:
        _print_json(report.to_dict())
    elif not quiet:
        for p in report.file_problems:
            err.print(Text.assemble(("problem:", "red"), " ", printable(p)), highlight=False,
                      soft_wrap=True)
        bad = [t for t in report.tensors if not t.ok]
        for t in bad:
            for problem in dict.fromkeys([t.problem, *t.bitstream_problems]):
                err.print(Text.assemble((f"tensor {printable(t.name)}:", "red"), " ",
                                        printable(str(problem))), highlight=False, soft_wrap=True)
        if strict:
            used = "; ".join(f"{c}: {', '.join(d) or 'no second decoder installed'}"
                             for c, d in sorted(report.second_decoders.items()))
            out.print(f"strict: {report.video_blobs_checked - report.video_blobs_failed} of "
                      f"{report.video_blobs_checked} video blobs well-formed and decoded alike"
                      f"{' (' + used + ')' if used else ''}")
        if report.ok:
            what = " and match the source" if against else ""
            what += f"; signature {signature} valid" if report.signature else ""
            out.print(f"OK: {len(report.tensors)} tensors and {report.attachments_checked} "
                      f"attachments intact{what}")
        elif bad:
            out.print(f"FAILED: {len(bad)} of {len(report.tensors)} tensors damaged; "
                      f"{len(report.intact)} intact")
        else:
            out.print("FAILED")
    if not report.ok:
        raise typer.Exit(EXIT_VERIFY_FAILED)


# ----------------------------------------------------------------------------- sign


@app.command()
def sign(
    archive: Annotated[Path, typer.Argument(help="The .llmc file to sign.")],
    key: Annotated[Path, typer.Option(help="EC private key (PEM, unencrypted), e.g. from "
                                      "`openssl ecparam -genkey -name prime256v1 -noout`.")],
    signature: Annotated[Path | None, typer.Option(
        help="Where to write the signature (default: ARCHIVE.sig).")] = None,
) -> None:
    """Sign the archive's exact bytes (OpenSSF model-signing, offline key pair).

    Check it with `llmc verify ARCHIVE --signature ARCHIVE.sig --public-key PUB.pem`."""
    from llmc_format.pipeline.signing import sign_archive

    with _errors():
        path = sign_archive(archive, key, signature)
    out.print(f"signed {archive} -> {path}")


# ----------------------------------------------------------------------------- extract


@app.command()
def extract(
    archive: Annotated[Path, typer.Argument(help="The .llmc file.")],
    tensor: Annotated[str, typer.Argument(help="Name of the tensor (see `llmc inspect`).")],
    output: Annotated[Path | None, typer.Option(
        "-o", "--output", help="File to write (default: named after the tensor). With --raw, "
        "x.266 gives x.266 (or x.000.266, x.001.266... for several frames) and x.json.")] = None,
    raw: Annotated[bool, typer.Option(
        "--raw", help="Write the tensor's bare video bitstream(s) as stored (.266 VVC, .265 HEVC, "
        ".obu AV1, .nut FFV1) plus a JSON sidecar (dequantization parameters, frame tiling) "
        "enough to rebuild it with FFmpeg and numpy.")] = False,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite existing files.")] = False,
) -> None:
    """Write one tensor out: decoded as .npy, or (--raw) as its video bitstreams."""
    from llmc_format.pipeline.extract import extract_array, extract_raw

    with _errors():
        if raw:
            res = extract_raw(archive, tensor, output, overwrite=force)
            names = [str(p) for p in res.bitstreams]
            shown = ", ".join(names) if len(names) <= 3 else f"{names[0]} ... {names[-1]}"
            out.print(plain(f"wrote {len(names)} {res.info['codec']['id']} bitstream(s) "
                            f"({shown}) and {res.sidecar}"), highlight=False, soft_wrap=True)
        else:
            path = extract_array(archive, tensor, output, overwrite=force)
            out.print(plain(f"wrote {path}"), highlight=False, soft_wrap=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
