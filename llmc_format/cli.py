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

import inspect as pyinspect
import json
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperCommand, TyperGroup
from typer.exceptions import TyperException

import llmc_format
from llmc_format.errors import LlmcError, UsageError
from llmc_format.naming import natural_sorted, printable
from llmc_format.units import format_size, parse_size

_CODEC_HELP = ("exact (lossless; a GGUF's tensors keep their ggml types, unpack --format gguf "
               "returns the same file) or a lossy video codec: vvc, hevc, av1; ffv1 is a "
               "lossless video codec for comparison.")


def _codec_help() -> str:
    """``pack --codec``'s help, naming every codec installed (plugins included).

    Listing them imports every codec module and entry point (~0.2 s), so ``_PackCommand``
    asks for it only when the help is drawn, not on every start of the CLI.
    """
    try:
        from llmc_format.pipeline.policy import codec_choices

        return f"{_CODEC_HELP} Installed: {', '.join(codec_choices())}."
    except LlmcError as exc:  # a broken plugin: say so in the help rather than fail
        return f"{_CODEC_HELP} ({exc})"


def _tidy_help(ctx: Any, command: Any) -> None:
    """A command's help as it should read at any width: docstring paragraphs rewrapped
    (typer keeps the source's line breaks after the first paragraph: ragged lines at 80
    columns); nothing after a flag (typer writes ``<bool>``) or a text argument
    (``<str>``); choices and metavars (``[exact|vvc...]``, ``SIZE``) are set where the
    option is declared."""
    if command.help:
        command.help = "\n\n".join(" ".join(p.split()) for p in
                                    pyinspect.cleandoc(command.help).split("\n\n"))
    for param in command.get_params(ctx):
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
        elif param.param_type_name == "argument" and param.display_type(ctx) == "<str>":
            param.display_type_rich = lambda ctx: None  # the name column says it


class _Command(TyperCommand):
    """Every ``llmc`` command: a help without type placeholders."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _tidy_help(ctx, self)
        super().format_help(ctx, formatter)


class _PackCommand(_Command):
    """``pack``: its ``--codec`` help lists the installed codecs, looked up when the help
    is drawn (whatever the command line: ``-h``, ``--help``, ``app(["pack", "-h"])``)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        for param in self.params:
            if param.name == "codec":
                param.help = _codec_help()  # type: ignore[attr-defined]
        super().format_help(ctx, formatter)


def _examples(*lines: str) -> str:
    """A command's help epilog: ``Examples:`` and one command per line."""
    return "Examples:\n\n" + "\n\n".join(f"  {line}" for line in lines)


EXIT_VERIFY_FAILED = 1
EXIT_USAGE = 2
EXIT_LLMC_ERROR = 3
EXIT_INTERRUPTED = 130


def plain(value: object, style: str = "") -> Text:
    """A rich ``Text`` of ``printable(value)``: no markup, no escapes reach the terminal."""
    return Text(printable(value), style=style)


def _error_line(exc: object, prefix: str = "error:", style: str = "bold red") -> None:
    err.print(Text.assemble((prefix, style), " ", printable(exc)), highlight=False,
              soft_wrap=True)


def _usage_line(exc: TyperException) -> NoReturn:
    """A usage error of click (unknown option, missing or bad value) as one line like
    every other error — not typer's boxed panel — naming the help to read; exit 2 (the
    exception's own code). ``llmc`` alone prints the help: passed on as it is."""
    if type(exc).__name__ == "NoArgsIsHelpError":
        raise exc
    ctx = getattr(exc, "ctx", None)
    where = f" (see {ctx.command_path} -h)" if ctx is not None else ""
    _error_line(f"{exc.format_message()}{where}")  # type: ignore[attr-defined]
    raise typer.Exit(getattr(exc, "exit_code", EXIT_USAGE))


def _exit_code(exc: LlmcError) -> int:
    """2 for an option value llmc itself refuses (bad usage), 3 for any other llmc error."""
    return EXIT_USAGE if isinstance(exc, UsageError) else EXIT_LLMC_ERROR


def _os_error_text(exc: OSError) -> str:
    """``path: reason`` for an OSError (disk full, permission denied, ...)."""
    where = exc.filename if exc.filename is not None else ""
    reason = exc.strerror or str(exc)
    return f"{where}: {reason}" if where else reason


class _OneLineErrors(TyperGroup):
    """The one error handler: every command runs inside it, and whatever escapes becomes
    one line on stderr and the documented exit code (2 an option value llmc refuses,
    ``UsageError``; 3 any other llmc or system error; 130 interrupted), never a traceback
    (``LLMC_DEBUG=1`` shows it). Click's usage errors (2) and ``Exit`` pass through.
    Commands therefore just raise; none catches errors to print them."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _tidy_help(ctx, self)
        super().format_help(ctx, formatter)

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None,
                     **extra: Any) -> Any:
        try:  # ``llmc --bogus``: a usage error of the group itself
            return super().make_context(info_name, args, parent, **extra)
        except TyperException as exc:
            _usage_line(exc)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except TyperException as exc:  # a command's options: unknown, missing, bad value
            _usage_line(exc)
        except (typer.Exit, typer.Abort):
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
            raise typer.Exit(_exit_code(exc)) from None
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
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=True,
)
out = Console()
err = Console(stderr=True)

def version_lines() -> list[str]:
    """llmc, the format it writes, and the external coders it runs, with their versions
    (what a bug report needs; an encoder that is missing says so instead)."""
    from llmc_format.container import layout

    lines = [f"llmc {llmc_format.__version__} (writes format "
             f"{layout.MAJOR_VERSION}.{layout.MINOR_VERSION}, spec/FORMAT.md)"]
    try:
        from llmc_format.codecs.video import ffmpeg

        lines.append(f"FFmpeg {ffmpeg.ffmpeg_version()} ({ffmpeg.ffmpeg_exe()})")
        for enc, pix in (("libvvenc", "yuv420p10le"), ("libx265", "yuv420p10le"),
                         ("libaom-av1", "yuv420p10le")):
            try:
                lines.append(f"  {enc} {ffmpeg.encoder_info(enc, pix).version}")
            except LlmcError:
                lines.append(f"  {enc}: not available")
    except (LlmcError, OSError) as exc:
        lines.append(f"FFmpeg: not available ({exc})")
    try:
        import av

        lines.append(f"PyAV {av.__version__} (decoding)")
    except ImportError:
        lines.append("PyAV: not installed (needed to decode lossy archives)")
    return lines

def _version(value: bool) -> None:
    if value:
        for line in version_lines():
            out.print(line, highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit()


class _Chatter:
    """What a command prints besides its result and its errors: set by the global
    ``llmc -q/-v`` and by a command's own ``-q/-v`` (either place works, as with git)."""

    quiet = False  # errors only: no progress, summary, notes or warnings
    verbose = False  # also a line per tensor done and each step's duration


_chatter = _Chatter()

_QUIET_HELP = "Errors only: no progress, summary or warnings (the exit code tells)."
_VERBOSE_HELP = "Also a line per tensor done and each step's duration, on stderr."
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help=_QUIET_HELP)]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help=_VERBOSE_HELP)]


def _set_chatter(quiet: bool, verbose: bool = False) -> bool:
    """Merge a command's ``-q/-v`` into the global ones; returns whether quiet."""
    quiet, verbose = quiet or _chatter.quiet, verbose or _chatter.verbose
    if quiet and verbose:
        raise UsageError("-q/--quiet and -v/--verbose contradict each other: give one")
    _chatter.quiet, _chatter.verbose = quiet, verbose
    return quiet


@app.callback(epilog="Every command takes -h; -q/-v go before or after the command "
              "(llmc -q pack ... or llmc pack ... -q). Exit codes: 0 ok, 1 verify found a "
              "problem, 2 bad usage, 3 an llmc error (one line on stderr), 130 interrupted.")
def main(
    version: Annotated[bool, typer.Option("--version", "-V", callback=_version, is_eager=True,
                                          help="Print llmc's, the format's, FFmpeg's, the "
                                          "encoders' and PyAV's versions and exit.")] = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """llmc: compress and archive model weights."""
    _chatter.quiet, _chatter.verbose = False, False  # a fresh start for every invocation
    _set_chatter(quiet, verbose)


@contextmanager
def _progress(what: str, step: str = "", *, hidden: bool = False
              ) -> Iterator[Callable[[str, int, int], None]]:
    """A progress line on stderr (``progress_view``) fed ``(item, done, total)`` for one
    named ``step``."""
    with _view(what, hidden=hidden) as view:
        yield lambda item, done, total: view(step, item, done, total)


def _view(what: str, *, hidden: bool = False) -> Any:
    """The progress view of a command: step, item, bar, counts and a running clock; nothing
    drawn when quiet or ``hidden`` (``--json``), per-tensor lines when verbose."""
    from llmc_format.progress_view import from_environment

    return from_environment(err, what, quiet=_chatter.quiet or hidden,
                            verbose=_chatter.verbose)


def _check_jobs(jobs: int | None) -> None:
    """-j 0 or below is bad usage (exit 2) for every command, as ``PackOptions`` says for pack."""
    if jobs is not None and jobs < 1:
        raise typer.BadParameter(f"must be at least 1, got {jobs}", param_hint="--jobs")


def _parse_meta(items: list[str]) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--meta expects KEY=VALUE, got {item!r}")
        try:
            meta[key] = json.loads(value)  # typed: numbers, booleans, lists...
        except json.JSONDecodeError:
            meta[key] = value
    return meta


# ----------------------------------------------------------------------------- pack


_TARGETS = "Targets (RD optimization: a QP per tensor)"
_LOSSY = "Lossy coding"
_TENSORS = "Which tensors go lossy"
_RUN = "Execution"
_OUT = "Output"


@app.command(cls=_PackCommand, epilog=_examples(
    "llmc pack model_dir -o m.llmc                       # lossless",
    "llmc pack model.gguf -o m.llmc --codec vvc --bpw 3  # 3 bits per lossy weight",
    "llmc pack model_dir -o m.llmc --codec vvc --qp 34   # one QP for every tensor"))
def pack(
    src: Annotated[Path, typer.Argument(help="A .safetensors file, a Hugging Face model "
                                        "directory, a torch state dict (.bin/.pt), a .gguf "
                                        "file or a .llmc archive.")],
    # a str, not a Path: Path("out/") drops the slash that says the user meant a directory
    output_arg: Annotated[str, typer.Option("-o", "--output", metavar="<path>",
                                            help="The .llmc file to write.",
                                            rich_help_panel=_OUT)],
    codec: Annotated[str, typer.Option(metavar="[exact|vvc|hevc|av1|ffv1]",
                                       help=_CODEC_HELP,
                                       rich_help_panel=_LOSSY)] = "exact",
    qp: Annotated[int | None, typer.Option(help="One quantizer for every lossy tensor "
                                           "(higher = smaller) \\[default: 37].",
                                           rich_help_panel=_LOSSY)] = None,
    preset: Annotated[str | None, typer.Option(metavar="NAME", help="Encoder preset: vvc faster (default), "
                                               "fast, medium, slow, slower; hevc ultrafast ... "
                                               "medium (default) ... placebo; av1 a number "
                                               "(svt 0-13, default 8).", rich_help_panel=_LOSSY)] = None,
    bits: Annotated[int | None, typer.Option(help="Bit depth of the quantization before "
                                             "video coding \\[default: 10].",
                                             rich_help_panel=_LOSSY)] = None,
    scaling: Annotated[str | None, typer.Option(metavar="[row|tensor]",
                                                help="Affine scale per row (default with "
                                                "--qp) or per tensor (needs a target).",
                                                rich_help_panel=_LOSSY)] = None,
    transform: Annotated[str, typer.Option(metavar="[auto|none|dct]",
                                           help="dct: 32x32 block DCT codes, one scale per "
                                           "tensor (needs a target); none: affine codes; "
                                           "auto: dct with a target and vvc/hevc.",
                                           rich_help_panel=_LOSSY)] = "auto",
    bpw: Annotated[float | None, typer.Option(help="All-in bits per lossy weight.",
                                              rich_help_panel=_TARGETS)] = None,
    size: Annotated[str | None, typer.Option(metavar="SIZE", help="Whole-file size, e.g. 60MB.",
                                             rich_help_panel=_TARGETS)] = None,
    snr: Annotated[float | None, typer.Option(help="Every lossy tensor at least this SNR (dB).",
                                              rich_help_panel=_TARGETS)] = None,
    weighting: Annotated[str, typer.Option(metavar="[auto|nmse|mse]",
                                           help="How tensors' errors are weighed: auto = "
                                           "self-calibration when transformers can build "
                                           "the model (up to 2 B weights), else nmse "
                                           "(relative error); mse = equal per weight.",
                                           rich_help_panel=_TARGETS)] = "auto",
    calibration: Annotated[str | None, typer.Option(metavar="FILE|self",
                                                    help="Weigh tensors by their squared loss "
                                                    "gradient on a text FILE, or on text the "
                                                    "model samples itself.",
                                                    rich_help_panel=_TARGETS)] = None,
    allow_over: Annotated[bool, typer.Option("--allow-over", help="Let a size/bpw target be exceeded by up "
                                             "to its 2% tolerance.",
                                             rich_help_panel=_TARGETS)] = False,
    lossy: Annotated[list[str] | None, typer.Option("--lossy", metavar="GLOB",
                                                    help="Code these tensors lossy (e.g. "
                                                    "'*embed_tokens*'); repeatable.",
                                                    rich_help_panel=_TENSORS)] = None,
    lossless: Annotated[list[str] | None, typer.Option("--lossless", metavar="GLOB",
                                                       help="Keep these tensors exact (outside "
                                                       "a target's allocation); wins over "
                                                       "--lossy; repeatable.",
                                                       rich_help_panel=_TENSORS)] = None,
    min_lossy_numel: Annotated[int, typer.Option(help="Tensors with fewer elements stay exact.",
                                                 rich_help_panel=_TENSORS)] = 16384,
    jobs: Annotated[int | None, typer.Option("-j", "--jobs", help="Tensors encoded at once "
                                             "\\[default: all cores].", rich_help_panel=_RUN)] = None,
    executor: Annotated[str, typer.Option(metavar="[local|ray]",
                                          help="local threads, or Ray workers (pip install "
                                          "'llmc-format\\[ray]'); same bytes either way.",
                                          rich_help_panel=_RUN)] = "local",
    ray_address: Annotated[str | None, typer.Option(metavar="ADDRESS", help="Ray cluster to join (auto, "
                                                    "ray://head:10001) \\[default: $RAY_ADDRESS].",
                                                    rich_help_panel=_RUN)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted fixed-QP "
                                         "pack of the same SRC and options (same bytes).",
                                         rich_help_panel=_RUN)] = False,
    meta: Annotated[list[str] | None, typer.Option("--meta", metavar="KEY=VALUE",
                                                   help="User metadata (VALUE parsed as JSON "
                                                   "when it is); repeatable.",
                                                   rich_help_panel=_OUT)] = None,
    timestamp: Annotated[bool, typer.Option("--timestamp", help="Record the creation time and timings (the "
                                            "archive is then not reproducible).",
                                            rich_help_panel=_OUT)] = False,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite OUTPUT if it exists.",
                                        rich_help_panel=_OUT)] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.",
                                          rich_help_panel=_OUT)] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help=_QUIET_HELP,
                                        rich_help_panel=_OUT)] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help=_VERBOSE_HELP,
                                          rich_help_panel=_OUT)] = False,
) -> None:
    """Pack a model into one .llmc archive (lossless by default)."""
    from llmc_format.io import open_source
    from llmc_format.pipeline.executor import make_executor
    from llmc_format.pipeline.options import PackOptions, check_paths, run_pack

    given = {k for k, v in (("qp", qp), ("preset", preset), ("bits", bits), ("scaling", scaling),
                            ("lossy", lossy), ("calibration", calibration)) if v}
    given |= {k for k, v, d in (("transform", transform, "auto"), ("weighting", weighting, "auto"),
                                ("allow_over", allow_over, False)) if v != d}
    quiet = _set_chatter(quiet, verbose)
    created = None
    if timestamp:
        from datetime import UTC, datetime

        created = datetime.now(UTC).isoformat(timespec="seconds")
    options = PackOptions(
        codec=codec, qp=qp, bpw=bpw, size=size, snr=snr, weighting=weighting,
        allow_over=allow_over, calibration=calibration, preset=preset, bits=bits,
        scaling=scaling, transform=transform, lossy=tuple(lossy or ()),
        lossless=tuple(lossless or ()), min_lossy_numel=min_lossy_numel, jobs=jobs,
        executor=executor, ray_address=ray_address, metadata=_parse_meta(meta or []),
        created=created, record_timings=timestamp, resume=resume, given=frozenset(given))
    check_paths(src, output_arg, force=force)
    output = Path(output_arg)
    for w in options.warnings():
        _warn(w)
    # the clock and the progress line start before the source is opened: a GGUF's
    # metadata, tokenizer and config take seconds to read, and they are part of the pack
    with _view("pack:", hidden=as_json) as view:
        view("opening source", str(src), 0, 0)
        with open_source(src) as source, \
                make_executor(executor, jobs=jobs, address=ray_address) as ex:
            try:
                rd = run_pack(options, source, output, executor=ex, warn=_warn,
                              progress=lambda ev, name, d, t: view(
                                  "encoding" if ev in ("tensor", "start") else ev, name, d, t))
            except (LlmcError, KeyboardInterrupt):
                from llmc_format.container.journal import leftovers

                if not options.targeted and any(j.exists() for _, j in leftovers(output)):
                    err.print("note: finished tensors were kept; rerun the same command "
                              "with --resume to continue")
                raise
    if as_json:
        from llmc_format.pipeline.inspect import summarize

        out.print_json(data=_jsonable({"wrote": str(output), **summarize(output),
                                       "rd": rd}))
    elif not quiet:
        _print_summary(output, view.elapsed)
        if rd is not None:
            target = options.target()
            _print_target(target.kind, target.value, rd)
    if rd is not None:
        _warn_low_snr(rd)
        _warn_under_target(options.target(), rd)
    else:
        _warn_raised_qps(output)


def _warn_raised_qps(path: Path) -> None:
    """One warning for the tensors coded at a coarser QP than --qp because the encoder
    refused the asked one (``rd.qp_requested``, see ``pipeline.pack.encode_one``)."""
    from llmc_format.container.reader import Reader

    with Reader(path) as r:
        raised = {e.name: e.rd["qp"] for e in r.index.tensors
                  if e.rd and isinstance(e.rd.get("qp_requested"), int)}
    if raised:
        names = natural_sorted(raised)
        qps = sorted(set(raised.values()))
        _warn(f"the encoder refused the asked QP for {len(raised)} tensor(s) "
              f"({names[0]!r}{', ...' if len(names) > 1 else ''}): coded at the finest QP it "
              f"accepted ({qps[0]}{'-' + str(qps[-1]) if len(qps) > 1 else ''}); "
              "inspect shows each tensor's QP")


def _print_target(kind: str, value: float, rd: dict[str, Any]) -> None:
    """What a target pack achieved, in the units the targets count (README "Targets")."""
    a = rd["achieved"]
    shown = format_size(value) if kind == "size" else f"{value:g}"
    snr = ("no tensor lossy" if a["min_snr_db"] is None
           else f"min SNR {_fmt(a['min_snr_db'])} dB")
    out.print(f"RD target {kind}={shown}: {rd['passes']} pass(es); "
              f"{a['rd_bpw_all_in']:.3f} bits/weight all-in over the {a['rd_weights']:,} "
              f"weights the allocation decides (what --bpw counts): {a['lossy_tensors']} "
              f"tensors lossy, {a['kept_exact_tensors']} kept exact "
              f"({format_size(a['kept_exact_bytes'])}), {snr}; "
              f"other tensors {format_size(a['lossless_tensor_bytes'])}, attachments "
              f"{format_size(a['attachment_bytes'])}; whole file {a['model_bpw']:.3f} "
              f"bits/weight over all {a['model_weights']:,} weights",
              highlight=False, soft_wrap=True)


def _fmt_target(target: Any) -> str:
    return format_size(int(target.value)) if target.kind == "size" else f"{target.value:g}"


def _warn(message: str) -> None:
    """A warning line on stderr (not with -q). ``message`` may hold names from a model or
    an archive: printed escaped, no markup."""
    if not _chatter.quiet:
        _error_line(message, "warning:", "yellow")


def _warn_low_snr(rd: dict[str, Any]) -> None:
    from llmc_format.pipeline.options import LOW_SNR_DB

    low = rd.get("achieved", {}).get("min_snr_db")
    if low is not None and low < LOW_SNR_DB:
        _warn(f"the target drives at least one tensor to {low:.2f} dB SNR (under "
              f"{LOW_SNR_DB:g} dB its error is a large part of its signal); `llmc inspect "
              "--sort snr` lists them")


def _warn_under_target(target: Any, rd: dict[str, Any]) -> None:
    """Say so when a size or bpw target's file is not in its window under the target
    (``within_tolerance`` false): a user who asked for at most S should not have to notice
    that the file is 5% smaller, nor wonder why."""
    if rd.get("within_tolerance") is not False or target.kind == "snr":
        return
    a = rd["achieved"]
    got = a["file_bytes"] if target.kind == "size" else a["rd_bpw_all_in"]
    _warn(f"the file is {100 * (1 - got / target.value):.1f}% under the --{target.kind} "
          f"target {_fmt_target(target)}: no choice of the allocation lands within "
          f"{100 * target.tolerance:g}% under it (integer QPs on few tensors, the whole "
          "model kept exact smaller than the target, or a tensor's finest lossy QP and its "
          "exact storage straddling the budget); `llmc inspect --rd` shows the choices")


def _print_summary(path: Path, seconds: float | None = None) -> None:
    from llmc_format.pipeline.inspect import summarize
    from llmc_format.progress_view import format_duration

    s = summarize(path)
    took = "" if seconds is None else f" in {format_duration(seconds)}"
    out.print(plain(f"wrote {path}{took}: {s['tensors']} tensors, "
                    f"{format_size(s['file_bytes'])}, {s['file_bpw']:.3f} bits/weight all-in"))
    out.print(plain(_ratio_text(s)))  # a line of its own: 80 columns do not hold both
    if s["input_bytes"] and s["file_bytes"] > s["input_bytes"]:
        _warn(f"the archive ({format_size(s['file_bytes'])}) is larger than its input "
              f"({format_size(s['input_bytes'])})")


def _ratio_text(s: dict[str, Any]) -> str:
    """Ratio against the input files first; against the decoded tensors (e.g. a GGUF's
    float32 expansion) second, since that is not what the user started from."""
    decoded = f"{s['ratio']:.3f} vs the decoded tensors' {format_size(s['source_bytes'])}"
    if not s.get("input_bytes"):
        return f"ratio {decoded}"
    return (f"ratio {s['input_ratio']:.3f} vs the input's {format_size(s['input_bytes'])} "
            f"({decoded})")


# ----------------------------------------------------------------------------- unpack


@app.command(cls=_Command, epilog=_examples(
    'llmc unpack m.llmc -o restored              # safetensors + config/tokenizer',
    'llmc unpack m.llmc -o restored --dtype bf16 --shard-size 2GB',
    'llmc unpack m.llmc -o out --format gguf     # a lossless GGUF: the same file'))
def unpack(
    archive: Annotated[Path, typer.Argument(help="The .llmc file.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Directory to write.")],
    fmt: Annotated[str, typer.Option("--format", metavar="[safetensors|pt|gguf]",
                                     help="safetensors (what save_pretrained writes), "
                                     "pt (pytorch_model.bin) or gguf (model.gguf: the packed GGUF "
                                     "byte for byte when the archive holds it losslessly, else "
                                     "float tensors under the archive's names).")] = "safetensors",
    dtype: Annotated[str | None, typer.Option(metavar="[bf16|fp16|fp32]",
                                              help="Cast float tensors to bf16, fp16 or fp32 "
                                              "(default: the stored dtype).")] = None,
    shard_size: Annotated[str | None, typer.Option(metavar="SIZE",
                                                   help="Split safetensors/pt into shards of at "
                                                   "most this size, e.g. 2GB.")] = None,
    tied: Annotated[str, typer.Option(metavar="[auto|copy|drop]",
                                      help="Tied weights (stored once): auto leaves out those "
                                      "transformers re-ties from config.json, as save_pretrained "
                                      "does; copy writes them all; drop writes none.")] = "auto",
    jobs: Annotated[int | None, typer.Option("-j", "--jobs", help="Tensors decoded at once, "
                                             "output order kept (default: all cores).")] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Write into OUTPUT even if it is a "
                                        "non-empty directory.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
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
    except LlmcError as exc:
        raise typer.BadParameter(str(exc), param_hint="--dtype") from None
    try:
        shard = parse_size(shard_size) if shard_size else None
    except LlmcError as exc:
        raise typer.BadParameter(str(exc), param_hint="--shard-size") from None
    if shard is not None and shard < 1:
        raise typer.BadParameter(f"must be positive, got {shard_size!r}",
                                 param_hint="--shard-size")
    _check_jobs(jobs)
    if shard is not None and fmt == "gguf":
        raise typer.BadParameter("GGUF is written as one file", param_hint="--shard-size")
    quiet = _set_chatter(quiet, verbose)
    if output.is_dir() and any(output.iterdir()) and not force:
        raise LlmcError(f"{output} is a non-empty directory; pass --force to write into it "
                        f"(weight files there are replaced, other files kept)")
    if str(output) == "-":
        raise UsageError("-o -: unpack writes a directory; give its path")
    with _progress("unpack:", "decoding", hidden=as_json) as update:
        result = up.unpack(archive, output, format=fmt, dtype=dtype, shard_size=shard,
                           tied=tied, progress=update, jobs=jobs or default_jobs())
    if as_json:
        out.print_json(data=_jsonable({
            "wrote": str(output), "files": list(result.files),
            "bytes": sum((output / f).stat().st_size for f in result.files),
            "attachments": list(result.attachments), "tied_dropped": result.tied_dropped}))
    elif not quiet:
        size = sum((output / f).stat().st_size for f in result.files)
        files = result.files[0] if len(result.files) == 1 else \
            f"{len(result.files) - 1} shards + {result.files[-1]}"
        out.print(plain(f"wrote {output}: {files} ({format_size(size)}), "
                        f"{_count(len(result.attachments), 'attachment')}"), highlight=False,
                  soft_wrap=True)
        if result.tied_dropped:
            pairs = ", ".join(f"{a} (= {t})" for a, t in result.tied_dropped.items())
            out.print(plain(f"tied weights left out: {pairs}; {result.tied_reason}"),
                      highlight=False, soft_wrap=True)


# ----------------------------------------------------------------------------- inspect


def _count(n: int, noun: str) -> str:
    """``1 attachment``, ``11 attachments``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


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


@app.command(cls=_Command, epilog=_examples(
    'llmc inspect m.llmc',
    "llmc inspect m.llmc --filter '*q_proj*' --sort snr",
    'llmc inspect m.llmc | grep embed | cut -f1,5   # tab-separated in a pipe',
    'llmc inspect m.llmc --rd --plot rd.png'))
def inspect(
    archive: Annotated[Path, typer.Argument(help="The .llmc file.")],
    filters: Annotated[list[str] | None, typer.Option(
        "--filter", metavar="GLOB", help="Only tensors whose name matches; repeatable.")] = None,
    sort: Annotated[str | None, typer.Option(
        metavar="[name|size|bpw|snr]", help="Order: name (natural: layers.2 before layers.10), "
        "size or bpw (largest first), snr (worst first) \\[default: name].")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    rd: Annotated[bool, typer.Option("--rd", help="Show the rate-distortion records: samples, "
                                     "chosen QP, predicted and achieved figures.")] = False,
    plot: Annotated[Path | None, typer.Option(help="Draw the RD curves and chosen points "
                                              "to this PNG.")] = None,
) -> None:
    """List tensors: dtype, shape, codec, stored bytes, bits per weight, QP, SNR; totals.

    On a terminal: a header (source, policy, target, weighting) and full tensor names
    (on their own line when the figures do not fit beside them). Through a pipe:
    tab-separated values with a header row, one tensor per line.
    """
    from llmc_format import inspect_view as view
    from llmc_format.pipeline.inspect import describe

    if sort is not None and sort not in view.SORTS:
        from llmc_format.pipeline.options import did_you_mean

        raise UsageError(f"--sort: {sort!r} is not one of {', '.join(view.SORTS)}"
                         f"{did_you_mean(sort, view.SORTS)}")
    d = describe(archive)
    if plot is not None:
        _plot_rd(d, plot)
    if as_json:
        _print_json(_jsonable(d))
        return
    if rd:
        _print_rd(d)
        return
    shown = [{**t, "name": printable(t["name"]), "codec": printable(t["codec"])}
             for t in view.select(d["tensors"], filters or (), sort)]
    if not out.is_terminal:
        sys.stdout.write("".join(line + "\n" for line in view.tsv(shown)))
    else:
        for line in [*view.header(d, out.width), "", *view.table(shown, out.width), "",
                     *view.totals(d, len(shown), _ratio_text(d["summary"]))]:
            out.print(plain(line), highlight=False, soft_wrap=True)
    _warn_rd_problems(d)


def _warn_rd_problems(d: dict[str, Any]) -> None:
    """One warning line per RD record inspect could not use (shown as '-')."""
    if d.get("rd_summary_problem"):
        _warn(f"{d['rd_summary_problem']}: RD summary not shown")
    for t in natural_sorted(d["tensors"], key=lambda t: t["name"]):
        if t.get("rd_problem"):
            _warn(f"tensor {t['name']!r}: RD record ignored: {t['rd_problem']}")


def _print_rd(d: dict[str, Any]) -> None:
    rd = d["metadata"].get("rd")
    if rd and not d.get("rd_summary_problem"):
        out.print(plain(f"RD: target {rd['target']['kind']}={rd['target']['value']:g}, weighting "
                  f"{rd.get('weighting')}, lambda {_fmt(rd.get('lambda'), '.3g')}, "
                  f"{rd.get('passes')} pass(es)"), highlight=False)
    rows = [t for t in natural_sorted(d["tensors"], key=lambda t: t["name"])
            if "qp" in (t.get("rd") or {}) or (t.get("rd") or {}).get("kept_exact")]
    if not rows:  # an empty table says nothing: say why (not an error: the archive is fine)
        out.print(plain(f"{d['path']} has no RD records to show: only a lossy archive (packed "
                        "at a QP or to a target) has them"), highlight=False, soft_wrap=True)
        _warn_rd_problems(d)
        return
    table = Table(title="rate-distortion per lossy tensor")
    for col in ("tensor", "samples (QP: bpw / SNR dB)", "QP", "predicted bpw", "bpw", "SNR dB"):
        table.add_column(col)
    for t in rows:
        r = t.get("rd") or {}
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
    from llmc_format.rd_plot import plot_rd

    if str(path) == "-":
        raise UsageError("--plot -: give a .png file name")
    drawn = plot_rd(d, path)
    err.print(plain(f"wrote {path}: {drawn['curves']} RD curves in {drawn['groups']} tensor "
                    f"group(s) ({drawn['highlighted']} largest coloured)"), highlight=False,
              soft_wrap=True)


# ----------------------------------------------------------------------------- repack


@app.command(cls=_Command, epilog=_examples(
    'llmc repack m3.llmc -o m2.llmc --bpw 2',
    'llmc repack m.llmc -o small.llmc --size 40MB',
    'llmc repack old.llmc -o fixed.llmc --repair'))
def repack(
    archive: Annotated[Path, typer.Argument(help="A lossy .llmc file (made with a target or a QP).")],
    output_arg: Annotated[str, typer.Option("-o", "--output", metavar="<path>",
                                            help="The .llmc file to write.")],
    bpw: Annotated[float | None, typer.Option(help="Target bits per weight (all-in) of the "
                                              "archive's lossy tensors.")] = None,
    size: Annotated[str | None, typer.Option(metavar="SIZE",
                                             help="Target whole-file size, e.g. 40MB.")] = None,
    snr: Annotated[float | None, typer.Option(help="Target SNR floor (dB) per lossy tensor, "
                                              "measured against the input archive.")] = None,
    repair: Annotated[bool, typer.Option("--repair", help="Instead of a target: copy the "
                                         "archive with encoder console text cut off its video "
                                         "blobs (what verify --strict reports), keeping each "
                                         "cut only if it decodes to the stored frame hash; "
                                         "lossless, nothing else changes.")] = False,
    weighting: Annotated[str, typer.Option(metavar="[nmse|mse]",
                                           help="Relative (nmse) or absolute (mse) error.")] = "nmse",
    jobs: Annotated[int | None, typer.Option("-j", "--jobs", help="Tensors encoded at once.")] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite OUTPUT.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Re-encode a lossy archive to a smaller target from its recorded RD data (no source model).

    Quality is reported against the original model as an estimate: the error the input
    archive recorded plus the new coding error (independent errors add).

    Activation-aware tensors (coded through a diagscale stage by a calibrated pack) keep
    their column multipliers, and the allocation keeps minimizing the activation-weighted
    error; a tensor kept exact stores its decoded values without them.
    """
    from llmc_format.pipeline.options import check_paths
    from llmc_format.pipeline.target import Target
    from llmc_format.pipeline.target import repack as do_repack

    quiet = _set_chatter(quiet, verbose)
    _check_jobs(jobs)
    if repair and any(v is not None for v in (bpw, size, snr)):
        raise typer.BadParameter("takes no --bpw/--size/--snr target", param_hint="--repair")
    if weighting not in ("nmse", "mse"):
        raise UsageError(f"--weighting: {weighting!r} is not one of nmse, mse")
    check_paths(archive, output_arg, force=force)
    output = Path(output_arg)
    if repair:
        _repair(archive, output)
        return
    try:
        target = Target.parse(size=size, bpw=bpw, snr=snr)
    except LlmcError as exc:
        raise UsageError(str(exc)) from None
    _warn_repack_up(archive, target)
    with _view("repack:", hidden=as_json) as view:
        rd = do_repack(archive, output, target, jobs=jobs, weighting=weighting,
                       progress=view)
    v = rd.get("versus_original") or {}
    if as_json:
        from llmc_format.pipeline.inspect import summarize

        out.print_json(data=_jsonable({"wrote": str(output), **summarize(output), "rd": rd}))
    elif not quiet:
        _print_summary(output, view.elapsed)
        _print_target(target.kind, target.value, rd)  # SNR: against the input archive
        if isinstance(rd.get("activation"), dict):
            out.print(plain(_repack_activation_line(rd["activation"])), highlight=False,
                      soft_wrap=True)
        if v.get("min_snr_db") is not None:
            out.print(f"against the original model (estimate: {archive.name}'s recorded "
                      f"error plus this one): min SNR {v['min_snr_db']:.2f} dB, mean "
                      f"{v['mean_snr_db']:.2f} dB", highlight=False, soft_wrap=True)
    if v.get("min_snr_db") is not None:
        _warn_low_snr({"achieved": {"min_snr_db": v["min_snr_db"]}})
    _warn_under_target(target, rd)


def _repack_activation_line(act: dict[str, Any]) -> str:
    """What a repack did with the input's activation-aware tensors (``repack``'s summary)."""
    return (f"activation-aware: {act.get('tensors')} tensors keep their diagscale column "
            f"multipliers ({act.get('multipliers')}; any the allocation kept exact drop them); "
            f"RD distortion: {act.get('distortion')}")


def _warn_repack_up(archive: Path, target: Any) -> None:
    """Re-coding cannot win back quality: a target above the input's rate only grows it."""
    from llmc_format.pipeline.inspect import summarize

    s = summarize(archive)
    if target.kind == "size" and target.value > s["file_bytes"]:
        _warn(f"--size {_fmt_target(target)} is larger than {archive.name} "
              f"({format_size(s['file_bytes'])}): re-coding cannot recover what that archive "
              "lost; the result is larger and no closer to the original")
    from llmc_format.rd.records import summary_problem

    with llmc_format.safe_open(archive) as f:
        rd = (f.metadata() or {}).get("rd")
    if rd is None or summary_problem(rd) is not None:  # nothing trustworthy to compare with
        return
    t = rd["target"]
    if target.kind == "bpw" and t.get("kind") == "bpw" and target.value > float(t["value"]):
        _warn(f"--bpw {target.value:g} is above {archive.name}'s {float(t['value']):g}: "
              "re-coding cannot recover what that archive lost; the result is larger and no "
              "closer to the original")


def _repair(archive: Path, output: Path) -> None:
    from llmc_format.pipeline.bitstreams import repair as do_repair

    with _progress("repack:", "repairing") as update:
        report = do_repair(archive, output, tool=f"llmc-format {llmc_format.__version__}",
                           progress=update)
    if _chatter.quiet:
        return
    if report.output is None:
        out.print(plain(f"nothing to repair: every video blob of {archive} is well-formed; "
                        f"{output} not written"), highlight=False, soft_wrap=True)
        return
    confirmed = sorted({d for v in report.repaired.values() for _, _, ds in v for d in ds})
    out.print(plain(f"repaired {report.blobs} blob(s) of {len(report.repaired)} tensor(s), "
                    f"{report.bytes_removed} bytes of console text removed; every cut blob "
                    f"decodes to its stored frame hash ({', '.join(confirmed)}): {output}"),
              highlight=False, soft_wrap=True)


# ----------------------------------------------------------------------------- verify


@app.command(cls=_Command, epilog=_examples(
    'llmc verify m.llmc',
    'llmc verify m.llmc --against model_dir   # also compare with the source',
    'llmc verify m.llmc --strict --json'))
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
    quiet: Quiet = False,
    verbose: Verbose = False,
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
        raise UsageError("--signature and --public-key go together")
    quiet = _set_chatter(quiet, verbose)
    with _progress("verify:", "checking", hidden=as_json) as update:
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
        bad = natural_sorted((t for t in report.tensors if not t.ok), key=lambda t: t.name)
        for t in bad:
            for problem in dict.fromkeys([t.problem, *t.bitstream_problems]):
                # the reader's messages name the tensor already: say it once
                text = str(problem).removeprefix(f"tensor {t.name!r}: ")
                err.print(Text.assemble((f"tensor {printable(t.name)}:", "red"), " ",
                                        printable(text)), highlight=False, soft_wrap=True)
        if strict:
            used = "; ".join(f"{c}: {', '.join(d) or 'no second decoder installed'}"
                             for c, d in sorted(report.second_decoders.items()))
            out.print(f"strict: {report.video_blobs_checked - report.video_blobs_failed} of "
                      f"{report.video_blobs_checked} video blobs well-formed and decoded alike"
                      f"{' (' + used + ')' if used else ''}")
        if report.ok:
            what = ""
            if against:
                lossy = [t for t in report.tensors if t.lossless is False]
                est = sum(t.estimate for t in lossy)
                what = f" and match the source ({len(report.tensors) - len(lossy)} bit-identical"
                if lossy:
                    what += f", {len(lossy)} lossy within their recorded error"
                    if est:
                        what += f", {est} of them against an estimate: repacked"
                what += ")"
            what += f"; signature {signature} valid" if report.signature else ""
            out.print(f"OK: {len(report.tensors)} tensors and {report.attachments_checked} "
                      f"attachments intact{what}", highlight=False, soft_wrap=True)
        elif bad:
            damaged = sum(t.kind != "mismatch" for t in bad)
            mismatch = len(bad) - damaged
            parts = [f"{damaged} of {len(report.tensors)} tensors damaged"] if damaged else []
            if mismatch:
                parts.append(f"{mismatch} intact but not matching {against}")
            out.print(f"FAILED: {'; '.join(parts)}; {len(report.intact)} intact",
                      highlight=False, soft_wrap=True)
        else:
            # the file itself (missing, unreadable, damaged index): said above
            out.print(f"FAILED: {_count(len(report.file_problems), 'problem')} with the file",
                      highlight=False, soft_wrap=True)
    if not report.ok:
        raise typer.Exit(EXIT_VERIFY_FAILED)


# ----------------------------------------------------------------------------- sign


@app.command(cls=_Command, epilog=_examples(
    'openssl ecparam -genkey -name prime256v1 -noout -out key.pem',
    'openssl ec -in key.pem -pubout -out pub.pem',
    'llmc sign m.llmc --key key.pem            # writes m.llmc.sig',
    'llmc verify m.llmc --signature m.llmc.sig --public-key pub.pem'))
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

    path = sign_archive(archive, key, signature)
    if not _chatter.quiet:
        out.print(plain(f"signed {archive} -> {path}"), highlight=False, soft_wrap=True)


# ----------------------------------------------------------------------------- extract


@app.command(cls=_Command, epilog=_examples(
    'llmc extract m.llmc model.layers.0.mlp.up_proj.weight -o w.npy',
    'llmc extract m.llmc model.layers.0.mlp.up_proj.weight --raw -o w.266'))
def extract(
    archive: Annotated[Path, typer.Argument(help="The .llmc file.")],
    tensor: Annotated[str, typer.Argument(help="Name of the tensor (see `llmc inspect`).")],
    output: Annotated[str | None, typer.Option(  # str: Path("d/") would drop the slash
        "-o", "--output", metavar="<path>", help="File to write, or a directory to write it "
        "in (default: named after the tensor, here). With --raw, "
        "x.266 gives x.266 (or x.000.266, x.001.266... for several frames) and x.json.")] = None,
    raw: Annotated[bool, typer.Option(
        "--raw", help="Write the tensor's bare video bitstream(s) as stored (.266 VVC, .265 HEVC, "
        ".obu AV1, .nut FFV1) plus a JSON sidecar (dequantization parameters, frame tiling) "
        "enough to rebuild it with FFmpeg and numpy.")] = False,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite existing files.")] = False,
) -> None:
    """Write one tensor out: decoded as .npy, or (--raw) as its video bitstreams."""
    from llmc_format.pipeline.extract import extract_array, extract_raw

    if raw:
        res = extract_raw(archive, tensor, output, overwrite=force)
        names = [str(p) for p in res.bitstreams]
        shown = ", ".join(names) if len(names) <= 3 else f"{names[0]} ... {names[-1]}"
        if not _chatter.quiet:
            out.print(plain(f"wrote {len(names)} {res.info['codec']['id']} bitstream(s) "
                            f"({shown}) and {res.sidecar}"), highlight=False, soft_wrap=True)
    else:
        path = extract_array(archive, tensor, output, overwrite=force)
        if not _chatter.quiet:
            out.print(plain(f"wrote {path}"), highlight=False, soft_wrap=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
