"""The ``llmc`` command: pack, unpack, inspect, verify, extract.

Commands parse arguments, call ``llmc_format.pipeline`` and render with rich; they hold no
logic of their own. Exit codes: 0 success; 1 ``verify`` found a problem; 2 bad usage;
3 an llmc error (unreadable input, corrupt archive, missing encoder...); 130 interrupted.
Errors print as one line on stderr, never a traceback (set LLMC_DEBUG=1 for one).
"""

from __future__ import annotations

import json
import math
import os
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

import llmc_format
from llmc_format.errors import LlmcError
from llmc_format.units import format_size, parse_size

app = typer.Typer(
    name="llmc",
    help="Archive LLM weights in one .llmc file: lossless (exact), or lossy with video "
    "codecs (VVC/H.266, HEVC, AV1) at a chosen QP.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)
out = Console()
err = Console(stderr=True)

EXIT_VERIFY_FAILED = 1
EXIT_LLMC_ERROR = 3


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
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_LLMC_ERROR) from None
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(130) from None


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
    codec: Annotated[str, typer.Option(help="exact (lossless) or a lossy video codec: vvc, hevc, "
                                       "av1; ffv1 is a lossless video codec for comparison.")] = "exact",
    qp: Annotated[int, typer.Option(help="Quantizer of the lossy codec (higher = smaller).")] = 37,
    preset: Annotated[str | None, typer.Option(help="Encoder preset (vvc: faster, fast, medium...).")] = None,
    bits: Annotated[int, typer.Option(help="Bit depth of the affine quantization before video coding.")] = 10,
    lossy: Annotated[list[str] | None, typer.Option("--lossy", help="Glob of tensor names to code lossy "
                                                    "(e.g. '*embed_tokens*'); repeatable.")] = None,
    lossless: Annotated[list[str] | None, typer.Option("--lossless", help="Glob of tensor names to "
                                                       "keep exact; wins over --lossy; repeatable.")] = None,
    min_lossy_numel: Annotated[int, typer.Option(help="Tensors with fewer elements stay exact.")] = 16384,
    jobs: Annotated[int | None, typer.Option("-j", "--jobs", help="Tensors encoded at once "
                                             "(default: all cores).")] = None,
    meta: Annotated[list[str] | None, typer.Option("--meta", help="KEY=VALUE user metadata (VALUE "
                                                   "parsed as JSON when it is); repeatable.")] = None,
    timestamp: Annotated[bool, typer.Option(help="Record the creation time (off: the archive "
                                            "is byte-identical across runs).")] = False,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite OUTPUT if it exists.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")] = False,
) -> None:
    """Pack a model into one .llmc archive."""
    from llmc_format.pipeline.pack import pack as do_pack
    from llmc_format.pipeline.policy import Policy

    with _errors():
        if output.exists() and not force:
            raise LlmcError(f"{output} exists; pass --force to overwrite it")
        policy = Policy(codec=codec, qp=qp, preset=preset, bits=bits,
                        min_lossy_numel=min_lossy_numel, lossy_patterns=tuple(lossy or ()),
                        lossless_patterns=tuple(lossless or ()))
        created = None
        if timestamp:
            from datetime import UTC, datetime

            created = datetime.now(UTC).isoformat(timespec="seconds")
        with _progress(quiet, "packing") as update:
            do_pack(src, output, policy=policy, jobs=jobs, user_metadata=_parse_meta(meta or []),
                    created=created, progress=lambda ev, name, d, t: update(name, d, t))
        if not quiet:
            _print_summary(output)


def _print_summary(path: Path) -> None:
    from llmc_format.pipeline.inspect import summarize

    s = summarize(path)
    out.print(
        f"wrote {path}: {s['tensors']} tensors, {format_size(s['file_bytes'])} "
        f"({s['file_bpw']:.3f} bits/weight all-in, ratio {s['ratio']:.3f} vs "
        f"{format_size(s['source_bytes'])})"
    )


# ----------------------------------------------------------------------------- unpack


@app.command()
def unpack(
    archive: Annotated[Path, typer.Argument(help="The .llmc file.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Directory to write.")],
    dtype: Annotated[str | None, typer.Option(help="Cast float tensors to bfloat16, float16 "
                                              "or float32 (default: the source dtype).")] = None,
    shard_size: Annotated[str | None, typer.Option(help="Split safetensors into shards of at most "
                                                   "this size, e.g. 2GB.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Unpack an archive to safetensors (plus its config/tokenizer attachments)."""
    from llmc_format.pipeline.unpack import unpack as do_unpack

    aliases = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
    with _errors():
        if dtype is not None:
            dtype = aliases.get(dtype, dtype)
            if dtype not in ("bfloat16", "float16", "float32"):
                raise LlmcError(f"--dtype must be bf16, fp16 or fp32, not {dtype!r}")
        shard = parse_size(shard_size) if shard_size else None
        with _progress(quiet, "unpacking") as update:
            do_unpack(archive, output, dtype=dtype, shard_size=shard, progress=update)
        if not quiet:
            out.print(f"wrote {output}")


# ----------------------------------------------------------------------------- inspect


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
) -> None:
    """List tensors: dtype, shape, codec, stored bytes, bits per weight, QP, SNR; totals."""
    from llmc_format.pipeline.inspect import describe

    with _errors():
        d = describe(archive)
    if as_json:
        out.print_json(data=d)
        return
    table = Table(title=f"{archive} — format {d['format_version']}, {d['metadata'].get('tool', '?')}")
    for col in ("tensor", "dtype", "shape", "codec", "stored", "bpw", "ratio", "QP", "SNR dB"):
        table.add_column(col, justify="right" if col not in ("tensor", "codec") else "left")
    for t in d["tensors"]:
        table.add_row(t["name"], t["dtype"], "x".join(map(str, t["shape"])) or "()", t["codec"],
                      format_size(t["stored_bytes"]), _fmt(t["bpw"], ".3f"), _fmt(t["ratio"]),
                      _fmt(t.get("qp"), "d"), _fmt(t.get("snr_db")))
    out.print(table)
    s = d["summary"]
    out.print(
        f"{s['tensors']} tensors ({s['lossy_tensors']} lossy), {s['weights']:,} weights, "
        f"{len(d['attachments'])} attachments; file {format_size(s['file_bytes'])}, "
        f"source {format_size(s['source_bytes'])}, ratio {s['ratio']:.3f}, "
        f"{s['file_bpw']:.3f} bits/weight all-in"
    )


# ----------------------------------------------------------------------------- verify


@app.command()
def verify(
    archive: Annotated[Path, typer.Argument(help="The .llmc file.")],
    against: Annotated[Path | None, typer.Option(
        help="The source model: lossless tensors must be bit-identical, lossy ones match "
        "their recorded SNR.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable report.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Check every checksum and byte, decode every tensor; exit 1 if anything is wrong."""
    from llmc_format.pipeline.verify import verify as do_verify

    with _errors(), _progress(quiet or as_json, "verifying") as update:
        report = do_verify(archive, against=against, progress=update)
    if as_json:
        out.print_json(data=report.to_dict())
    elif not quiet:
        for p in report.file_problems:
            err.print(f"[red]problem:[/] {p}", highlight=False, soft_wrap=True)
        bad = [t for t in report.tensors if not t.ok]
        for t in bad:
            err.print(f"[red]tensor {t.name}:[/] {t.problem}", highlight=False, soft_wrap=True)
        if report.ok:
            what = " and match the source" if against else ""
            out.print(f"OK: {len(report.tensors)} tensors and {report.attachments_checked} "
                      f"attachments intact{what}")
        elif report.tensors:
            out.print(f"FAILED: {len(bad)} of {len(report.tensors)} tensors damaged; "
                      f"{len(report.intact)} intact")
        else:
            out.print("FAILED")
    if not report.ok:
        raise typer.Exit(EXIT_VERIFY_FAILED)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
