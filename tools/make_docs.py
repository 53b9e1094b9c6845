"""Regenerate (or check) the command outputs shown in docs/*.md from real runs.

Each shown run in a doc is a fenced ``console`` block preceded by a marker line
``<!-- make_docs: ID -->``; ``RUNS`` below says, per ID, the command and how much of its
output to keep. The runs use MiniLM-L6 (``tools.models.minilm_dir``, linked as ``minilm``
into a work directory, so the docs show short relative paths) and SmolLM2-135M's GGUF
(linked under its file name), at 80 columns, with stdout on a terminal (the layout people
see) and stderr apart (warnings and errors; no progress line). A few runs are other
programs (``ls``, ``head``) showing what an llmc run wrote.

    python -m tools.make_docs            # rewrite the blocks in docs/
    python -m tools.make_docs --check    # exit 1 if a block no longer matches its command
    python -m tools.make_docs --check --only fast
    python -m tools.make_docs --only pack-help,inspect-vvc   # some runs (those need no others)

``--check`` compares structure, not figures: numbers become ``#`` and runs of spaces one
space, so a new size or SNR passes while a changed layout, message or exit code fails.
"""

from __future__ import annotations

import argparse
import os
import pty
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"
DOCS = ROOT / "docs"
MARKER = re.compile(r"^<!-- make_docs: (\S+) -->$")


@dataclass(frozen=True)
class Run:
    doc: str
    args: tuple[str, ...]
    #: keep the first ``head`` and last ``tail`` lines of the output (``…`` between)
    head: int | None = None
    tail: int = 0
    #: fast runs (lossless MiniLM, instant commands) are what the test suite checks
    fast: bool = True
    #: stdout through a pipe instead of a terminal (shows the TSV layout)
    pipe: bool = False
    #: the program run: llmc, or a plain one (ls, head) looking at what llmc wrote
    program: str = "llmc"


RUNS: dict[str, Run] = {
    "pack-lossless": Run("pack.md", ("pack", "minilm", "-o", "minilm.llmc")),
    "pack-exists": Run("pack.md", ("pack", "minilm", "-o", "minilm.llmc")),
    "pack-bad-qp": Run("pack.md", ("pack", "minilm", "-o", "x.llmc", "--codec", "vvc",
                                   "--qp", "99")),
    "pack-no-effect": Run("pack.md", ("pack", "minilm", "-o", "minilm-qp.llmc", "--qp", "30")),
    "pack-vvc": Run("pack.md", ("pack", "minilm", "-o", "minilm-vvc.llmc", "--codec", "vvc",
                                "--qp", "30"), fast=False),
    "pack-help": Run("pack.md", ("pack", "-h"), head=14, tail=8),
    "inspect-vvc": Run("inspect.md", ("inspect", "minilm-vvc.llmc"), head=22, tail=6,
                       fast=False),
    "inspect-filter": Run("inspect.md", ("inspect", "minilm.llmc", "--filter",
                                         "*layer.0.attention.self*", "--sort", "size")),
    "inspect-pipe": Run("inspect.md", ("inspect", "minilm.llmc", "--sort", "name"), head=4,
                        pipe=True),
    "inspect-not-archive": Run("inspect.md", ("inspect", "minilm/config.json")),
    "verify-ok": Run("verify.md", ("verify", "minilm.llmc", "--against", "minilm")),
    "unpack-lossless": Run("unpack.md", ("unpack", "minilm.llmc", "-o", "restored")),
    "unpack-ls": Run("unpack.md", ("restored",), program="ls", pipe=True),
    "unpack-exists": Run("unpack.md", ("unpack", "minilm.llmc", "-o", "restored")),
    "unpack-shards": Run("unpack.md", ("unpack", "minilm.llmc", "-o", "restored", "--force",
                                       "--shard-size", "20MB")),
    "unpack-index": Run("unpack.md", ("-12", "restored/model.safetensors.index.json"),
                        program="head", pipe=True),
    "unpack-gguf-shards": Run("unpack.md", ("unpack", "minilm.llmc", "-o", "x", "--format",
                                            "gguf", "--shard-size", "1GB")),
    "unpack-pt": Run("unpack.md", ("unpack", "minilm.llmc", "-o", "restored-pt", "--format",
                                   "pt")),
    "unpack-gguf-bf16": Run("unpack.md", ("unpack", "minilm.llmc", "-o", "restored-gguf",
                                          "--format", "gguf", "--dtype", "bf16")),
    "unpack-vvc-fp16": Run("unpack.md", ("unpack", "minilm-vvc.llmc", "-o", "restored-vvc",
                                         "--dtype", "fp16"), fast=False),
    "unpack-bad-format": Run("unpack.md", ("unpack", "minilm.llmc", "-o", "x", "--format",
                                           "onnx")),
    "unpack-help": Run("unpack.md", ("unpack", "-h"), head=12, tail=6),
    # SmolLM2-135M (Q4_1 GGUF): a lossless pack takes ~40 s, so these are not "fast"
    "pack-smollm2": Run("pack.md", ("pack", SMOLLM2, "-o", "smollm2.llmc"), fast=False),
    "inspect-smollm2": Run("inspect.md", ("inspect", "smollm2.llmc"), head=22, tail=6,
                           fast=False),
    "unpack-smollm2": Run("unpack.md", ("unpack", "smollm2.llmc", "-o", "smol"), fast=False),
    "unpack-smollm2-copy": Run("unpack.md", ("unpack", "smollm2.llmc", "-o", "smol-copy",
                                             "--tied", "copy", "--dtype", "bf16"), fast=False),
    "unpack-smollm2-config": Run("unpack.md", ("-n", "dtype", "smol-copy/config.json"),
                                 program="grep", pipe=True, fast=False),
    "extract-pack": Run("extract.md", ("pack", "minilm", "-o", "minilm-bpw3.llmc", "--codec",
                                       "vvc", "--bpw", "3"), fast=False),
    "extract-raw": Run("extract.md", ("extract", "minilm-bpw3.llmc",
                                      "encoder.layer.0.attention.self.query.weight", "--raw",
                                      "-o", "q"), fast=False),
    "extract-npy": Run("extract.md", ("extract", "minilm-bpw3.llmc",
                                      "encoder.layer.0.attention.self.query.weight", "-o", "q"),
                       fast=False),
    "extract-exact-raw": Run("extract.md", ("extract", "minilm-bpw3.llmc",
                                            "embeddings.LayerNorm.weight", "--raw"),
                             fast=False),
    "repack-help": Run("repack.md", ("repack", "-h"), head=13),
    "repack-lossless": Run("repack.md", ("repack", "minilm.llmc", "-o", "x.llmc", "--bpw", "2")),
    "repack-bpw": Run("repack.md", ("repack", "minilm-bpw3.llmc", "-o", "minilm-bpw2.5.llmc",
                                    "--bpw", "2.5"), fast=False),
    "repack-above": Run("repack.md", ("repack", "minilm-bpw3.llmc", "-o", "y.llmc", "--bpw",
                                      "4"), fast=False),
}


def prepare(work: Path) -> None:
    """The inputs the runs name: ``minilm`` (MiniLM-L6's directory) and SmolLM2's GGUF,
    linked (the runs only read them); no archive or unpacked directory of an earlier run."""
    sys.path.insert(0, str(ROOT))
    from tools.models import minilm_dir, smollm2_gguf_path

    work.mkdir(parents=True, exist_ok=True)
    if not (work / "minilm").exists():  # a link: the runs only read it
        (work / "minilm").symlink_to(minilm_dir(), target_is_directory=True)
    if not (work / SMOLLM2).exists():
        (work / SMOLLM2).symlink_to(smollm2_gguf_path())
    for old in work.glob("*.llmc"):  # the runs create them: start from none
        old.unlink()
    for old in work.iterdir():  # and the directories unpack writes
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)


def run(r: Run, work: Path) -> tuple[list[str], int]:
    """The output lines a person sees (stderr, then stdout) and the exit code."""
    env = {**os.environ, "COLUMNS": "80", "LINES": "50", "NO_COLOR": "1",
           "PYTHONPATH": str(ROOT), "TERM": "dumb"}
    env.pop("LLMC_PROGRESS_LOG", None)
    script = Path(sys.executable).with_name("llmc")  # the installed command: its name in --help
    cmd = [str(script), *r.args] if script.exists() else [sys.executable, "-m",
                                                          "llmc_format.cli", *r.args]
    if r.program != "llmc":
        cmd = [r.program, *r.args]
    if r.pipe:
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True,
                              check=False)
        return (proc.stderr + proc.stdout).splitlines(), proc.returncode
    leader, follower = pty.openpty()
    proc_p = subprocess.Popen(cmd, cwd=work, env=env, stdout=follower, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    stderr = proc_p.stderr.read().decode() if proc_p.stderr else ""
    code = proc_p.wait()
    stdout = b"".join(chunks).decode().replace("\r\n", "\n")
    return [line.rstrip() for line in (stderr + stdout).splitlines()], code


def render(r: Run, lines: list[str], code: int) -> list[str]:
    """The console block's body: the command, the output (elided as asked), the exit."""
    if r.head is not None and len(lines) > r.head + r.tail:
        lines = [*lines[:r.head], "…", *(lines[-r.tail:] if r.tail else [])]
    shown = " ".join(a if re.fullmatch(r"[\w./=:-]+", a) else f"'{a}'" for a in r.args)
    pipe = f" | head -{r.head}" if r.pipe and r.head else ""
    return [f"$ {r.program} {shown}{pipe}", *lines, f"[exit {code}]"]


def shape(lines: list[str]) -> list[str]:
    """A block's structure: numbers as ``#``, runs of spaces as one, and a duration as
    ``# s`` however many units it spans (a loaded machine turns "50 s" into "1 min 5 s")."""
    out = []
    for line in lines:
        line = re.sub(r"\d+(\.\d+)?", "#", line)
        line = re.sub(r"# h # min\b|(# (h|min) )+# s\b", "# s", line)
        out.append(re.sub(r"\s+", " ", line).strip())
    return out


def blocks(text: str) -> dict[str, tuple[int, int]]:
    """Per run ID, the (start, end) line numbers of its console block's body."""
    lines = text.split("\n")
    found: dict[str, tuple[int, int]] = {}
    for i, line in enumerate(lines):
        m = MARKER.match(line)
        if m and i + 1 < len(lines) and lines[i + 1].startswith("```console"):
            end = next(j for j in range(i + 2, len(lines)) if lines[j].startswith("```"))
            found[m.group(1)] = (i + 2, end)
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="compare, do not write")
    ap.add_argument("--only", default="all",
                    help="all, fast (what the test suite checks) or run IDs, comma-separated")
    ap.add_argument("--work", type=Path, default=None, help="work directory (default: a temp dir)")
    ap.add_argument("--docs", type=Path, default=DOCS, help="the docs directory (default: docs/)")
    args = ap.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="llmc-docs-"))
    prepare(work)
    failures = []
    docs = {name: (args.docs / name).read_text()
            for name in sorted({r.doc for r in RUNS.values()})}
    wanted = set(RUNS) if args.only == "all" else {k for k, r in RUNS.items() if r.fast} \
        if args.only == "fast" else set(args.only.split(","))
    unknown = wanted - set(RUNS)
    if unknown:
        ap.error(f"unknown run IDs: {', '.join(sorted(unknown))}")
    for rid, r in RUNS.items():  # in order: later runs use earlier outputs
        if rid not in wanted:
            continue
        body = render(r, *run(r, work))
        lines = docs[r.doc].split("\n")
        where = blocks(docs[r.doc]).get(rid)
        if where is None:
            failures.append(f"{r.doc}: no block marked {rid}")
            continue
        start, end = where
        if args.check:
            if shape(lines[start:end]) != shape(body):
                old, new = shape(lines[start:end]), shape(body)
                diff = next((f"line {k}: {a!r} != {b!r}" for k, (a, b) in
                             enumerate(zip(old, new, strict=False)) if a != b),
                            f"{len(old)} lines documented, {len(new)} printed")
                failures.append(f"{r.doc} [{rid}] drifted: {diff}")
        else:
            docs[r.doc] = "\n".join([*lines[:start], *body, *lines[end:]])
    if not args.check:
        for name, text in docs.items():
            (args.docs / name).write_text(text)
    for f in failures:
        print(f, file=sys.stderr)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
