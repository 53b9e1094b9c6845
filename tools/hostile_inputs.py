"""Clean-room run: generate hostile archives and model directories, run every command on them.

    python tools/hostile_inputs.py                     # all cases, report to stdout
    python tools/hostile_inputs.py --out docs/results/hostile.md --workdir hostile-work
    python tools/hostile_inputs.py --only alias,fifo   # cases whose name contains a word

Nothing is stored: every input is generated here (issue 17's classes). Each command runs
as its own subprocess (``python -m llmc_format.cli ...``, or a short API script for
``safe_open``/``load_file``), with stdin fed ``y`` lines (a prompt that would run code gets
its yes), under an address-space cap (``RLIMIT_AS``) and a timeout, in a sandbox
directory per case::

    <case>/in/      the hostile input(s)          <case>/out/   the only place writes may go
    <case>/victim   a file symlinks point at      <case>/PWNED  written by any code that runs

After each command the sandbox is listed again. Reported per run and in total:

- **tracebacks**: a Python traceback or "internal error" on stderr, or an exit code other
  than 0, 3 (1 for ``verify`` only, 2 for usage);
- **hangs**: the timeout expired (the process group is killed);
- **outside writes**: a file outside ``out/`` created, changed or removed (the source
  and the victim included);
- **code executed**: a marker file appeared (hostile ``.py`` attachments, ``auto_map``
  configs and pickles all write one when run);
- **peak RSS** of each child (``wait4``), against the 1 GiB goal;
- **other findings**: contracts of the other half of issue 17 that a run can observe
  (an unpack whose weights are not the archive's tensors, a special output replaced,
  two concurrent packs both reporting success).

Exit status 1 if any traceback, hang, outside write or code execution was seen.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import math
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: address-space cap of every child (torch and PyAV reserve a lot of virtual memory)
ADDRESS_SPACE = 4 << 30
#: the goal for resident memory
RSS_GOAL = 1 << 30
TIMEOUT = 120.0

API_PROBE = """
import sys
import llmc_format
from llmc_format.errors import LlmcError
path = sys.argv[1]
try:
    with llmc_format.safe_open(path) as f:
        for k in f.keys():
            f.get_tensor(k)
            s = f.get_slice(k)
            if len(s):
                s[0:1]
        for a in f.attachments():
            f.read_attachment(a)
    llmc_format.load_file(path)
except LlmcError as exc:
    print("typed:", type(exc).__name__, file=sys.stderr)
    sys.exit(3)
"""

CHECK_UNPACKED = """
import sys, json
from pathlib import Path
from safetensors import safe_open
from llmc_format.container.reader import Reader
out, archive = Path(sys.argv[1]), sys.argv[2]
with Reader(archive) as r:
    stored = {t.name for t in r.index.tensors if t.alias_of is None}
found = set()
for shard in sorted(out.glob("*.safetensors")):
    try:
        with safe_open(str(shard), "numpy") as f:
            found |= set(f.keys())
    except Exception as exc:
        print(f"{shard.name} does not load: {exc}"); sys.exit(0)
if not stored <= found:
    print(f"unpacked weights lack {sorted(stored - found)[:3]}")
"""


# =========================================================================== cases


@dataclass
class Run:
    """One command of a case: argv after ``llmc`` (or ``api``), allowed exit codes."""

    args: list[str]
    allowed: tuple[int, ...] = (0, 3)
    #: the run's stdout/stderr, exit code, seconds, peak RSS and findings (filled in)
    code: int | None = None
    seconds: float = 0.0
    rss: int = 0
    findings: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)
    stderr: str = ""


@dataclass
class Case:
    name: str
    klass: str
    runs: list[Run]
    #: run before the commands (plant symlinks, FIFOs...), in the case directory
    setup: Callable[[Path], None] | None = None
    #: checks after all commands: extra findings (other half's contracts)
    check: Callable[[Path, list[Run]], list[str]] | None = None
    concurrent: bool = False
    fsize: int | None = None


#: the runs of each command name on the archive ``in/a.llmc`` (tensor/extract take a name)
def _arc_runs(*commands: str, tensor: str = "w") -> list[Run]:
    arc = "in/a.llmc"
    table = {
        "inspect": ["inspect", arc],
        "json": ["inspect", arc, "--json"],
        "rd": ["inspect", arc, "--rd"],
        "verify": ["verify", arc],
        "unpack": ["unpack", arc, "-o", "out/u"],
        "api": ["api", arc],
        "repack": ["repack", arc, "-o", "out/r.llmc", "--bpw", "2"],
        "extract": ["extract", arc, tensor, "-o", "out/x"],
        "raw": ["extract", arc, tensor, "--raw", "-o", "out/raw"],
    }
    return [
        Run(table[c], (0, 1) if c == "verify" else (0, 3))
        for c in (commands or ("inspect", "verify", "unpack", "api"))
    ]


def _write(case_dir: Path, data: bytes, name: str = "in/a.llmc") -> None:
    p = case_dir / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)


class Builder:
    """Base archives (real, small) and the forging of lies into them."""

    def __init__(self, base: Path) -> None:
        from fuzz.harness import ArchiveModel

        self.ArchiveModel = ArchiveModel
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        self.rng = np.random.default_rng(17)
        self.w = (self.rng.standard_normal((64, 256)) * 0.02).astype(np.float32)

    @functools.cached_property
    def exact(self) -> Path:
        """Exact tensors (one of 256 KiB zeros), three attachments, a tied alias."""
        from fuzz.harness import _seed_source
        from llmc_format.pipeline.pack import pack_source

        p = self.base / "exact.llmc"
        tensors = {
            "w": np.zeros((256, 256), np.float32),
            "emb": self.w[:, :32].copy(),
            "b": np.ones(8, np.float32),
        }
        atts = {
            "config.json": b'{"model_type": "llama", "tie_word_embeddings": true}',
            "tokenizer.json": b"{}",
            "sub/x.txt": b"x",
        }
        pack_source(_seed_source(tensors, atts, {"lm_head.weight": "emb"}), p, jobs=1)
        return p

    @functools.cached_property
    def qp(self) -> Path:
        """affine + vvc at one QP: what extract --raw takes."""
        import llmc_format

        p = self.base / "qp.llmc"
        llmc_format.save_file(
            {"a.weight": self.w, "n": np.ones(4, np.float32)},
            p,
            codec="vvc",
            qp=32,
            jobs=1,
            min_lossy_numel=1024,
        )
        return p

    @functools.cached_property
    def rd(self) -> Path:
        """A --bpw 3 pack: RD samples per lossy tensor."""
        from llmc_format.io.memory import MemorySource
        from llmc_format.pipeline.policy import Policy
        from llmc_format.pipeline.target import Target, pack_to_target

        p = self.base / "rd.llmc"
        src = MemorySource(
            {"a.weight": self.w, "b.weight": self.w[::-1].copy() * 2, "norm": np.ones(256, np.float32)}
        )
        pack_to_target(
            src,
            p,
            Target.parse(bpw=3.0),
            policy=Policy(codec="vvc", min_lossy_numel=1024, preset="faster"),
            jobs=1,
            weighting="mse",
        )
        return p

    def forge(self, src: str, lie: Callable[[Any], None]) -> Callable[[], bytes]:
        """The bytes of base archive ``src`` with ``lie`` applied (built when called)."""

        def make() -> bytes:
            m = self.ArchiveModel.parse(getattr(self, src).read_bytes())
            lie(m)
            return m.serialize()

        return make


def _tensor(m: Any, name: str) -> dict[str, Any]:
    return next(t for t in m.tensor_dicts() if t["name"] == name)


def archive_cases(b: Builder, marker: str) -> Iterator[tuple[Case, Callable[[], bytes]]]:
    """Hostile archives: (case, a function making the bytes written to in/a.llmc)."""
    from fuzz.harness import COLLIDING_NAMES, HOSTILE_RD, HOSTILE_RD_SUMMARY

    # -- alias fan-out ---------------------------------------------------------------
    for k in (2, 2000, 20000):

        def lie(m: Any, k: int = k) -> None:
            m.obj["tensors"] += [
                {"name": f"a{i}", "dtype": "float32", "shape": [256, 256], "alias_of": "w"} for i in range(k)
            ]

        yield (
            Case(
                f"alias fan-out x{k}",
                "alias fan-out",
                _arc_runs("inspect", "verify", "unpack", "api", "extract", tensor="a1"),
            ),
            b.forge("exact", lie),
        )

    # -- object count / nesting bombs ---------------------------------------------------
    for n in (1_000_000, 50_000_000):

        def maps(m: Any, n: int = n) -> None:
            m.obj["metadata"]["junk"] = [{}] * n

        yield (
            Case(f"{n:,} empty msgpack maps", "huge msgpack maps", _arc_runs("inspect", "verify")),
            b.forge("exact", maps),
        )
    for where in ("metadata", "rd", "quant", "codec config"):

        def deep(m: Any, where: str = where) -> None:
            d: Any = []
            for _ in range(900):
                d = [d]
            t = _tensor(m, "w")
            if where == "metadata":
                m.obj["metadata"]["deep"] = d
            elif where == "codec config":
                t["pipeline"][0]["x"] = d
            else:
                t[where] = {"x": d}

        yield (
            Case(f"900-deep {where}", "deep nesting", _arc_runs("json", "verify")),
            b.forge("exact", deep),
        )

    # -- recorded numbers --------------------------------------------------------------
    for i, rec in enumerate(HOSTILE_RD):

        def rd(m: Any, rec: Any = rec) -> None:
            _tensor(m, "a.weight")["rd"] = json.loads(json.dumps(rec))

        yield (
            Case(f"RD record lie {i}", "NaN/invalid RD records", _arc_runs("rd", "json", "repack")),
            b.forge("rd", rd),
        )
    for i, rec in enumerate(HOSTILE_RD_SUMMARY):

        def summ(m: Any, rec: Any = rec) -> None:
            m.obj["metadata"]["rd"] = rec

        yield (
            Case(
                f"RD summary lie {i}",
                "NaN/invalid RD records",
                [
                    Run(["inspect", "in/a.llmc", "--rd"]),
                    Run(["inspect", "in/a.llmc", "--json"]),
                    Run(["repack", "in/a.llmc", "-o", "out/r.llmc", "--bpw", "2"]),
                ],
            ),
            b.forge("rd", summ),
        )
    for key, value in (
        ("bits", "x"),
        ("bits", 99),
        ("pix_fmt", "rgb48"),
        ("frame_hashes", []),
        ("qp", math.nan),
        ("preset", "-y -i /etc/passwd"),
    ):

        def cfg(m: Any, key: str = key, value: Any = value) -> None:
            _tensor(m, "a.weight")["pipeline"][-1][key] = value

        yield (
            Case(
                f"codec config {key}={value!r}",
                "codec config lies",
                _arc_runs("extract", "raw", tensor="a.weight"),
            ),
            b.forge("qp", cfg),
        )
    for key, value in (("bits", "x"), ("granularity", "diagonal"), ("param_dtype", "complex64")):

        def acfg(m: Any, key: str = key, value: Any = value) -> None:
            _tensor(m, "a.weight")["pipeline"][0][key] = value

        yield (
            Case(
                f"affine config {key}={value!r}",
                "codec config lies",
                _arc_runs("extract", "raw", tensor="a.weight"),
            ),
            b.forge("qp", acfg),
        )

    # -- names -----------------------------------------------------------------------------
    for name in COLLIDING_NAMES:

        def tname(m: Any, name: str = name) -> None:
            _tensor(m, "b")["name"] = name

        yield (
            Case(
                f"tensor name {name[:24]!r}",
                "names (collisions, markup, escapes)",
                _arc_runs("inspect", "verify", "unpack", tensor=name),
                check=_unpacked_is_archive,
            ),
            b.forge("exact", tname),
        )

        def aname(m: Any, name: str = name) -> None:
            m.attachment_dicts()[1]["name"] = name

        yield (
            Case(
                f"attachment name {name[:24]!r}",
                "names (collisions, markup, escapes)",
                _arc_runs("verify", "unpack"),
                check=_unpacked_is_archive,
            ),
            b.forge("exact", aname),
        )
    for pair in (
        ("a", "a/b"),
        ("sub", "sub/x.txt"),
        ("../x", "ok"),
        ("x" * 255 + "y", "z"),
        ("tokenizer.json", "TOKENIZER.JSON"),
    ):

        def two(m: Any, pair: tuple[str, str] = pair) -> None:
            atts = m.attachment_dicts()
            atts[0]["name"], atts[1]["name"] = pair

        yield (
            Case(
                f"attachments {pair[0][:12]!r} + {pair[1][:12]!r}",
                "name collisions",
                _arc_runs("verify", "unpack"),
                check=_unpacked_is_archive,
            ),
            b.forge("exact", two),
        )

    # -- code in attachments ------------------------------------------------------------------
    evil = (
        f"import pathlib\npathlib.Path({marker!r}).write_text('pwned')\n"
        "from transformers import PretrainedConfig\n"
        "class EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n"
    ).encode()
    config = json.dumps(
        {
            "model_type": "evil",
            "tie_word_embeddings": True,
            "architectures": ["EvilForCausalLM"],
            "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilForCausalLM"},
        }
    ).encode()
    for variant in ("auto_map", "auto_map + no record"):

        def code(m: Any, variant: str = variant) -> None:
            atts = m.attachment_dicts()
            atts[0]["name"], atts[1]["name"] = "config.json", "evil.py"
            m.payload[id(atts[0]["blob"])], atts[0]["encoding"], atts[0]["size"] = config, "raw", len(config)
            m.payload[id(atts[1]["blob"])], atts[1]["encoding"], atts[1]["size"] = evil, "raw", len(evil)
            if variant.endswith("no record"):
                m.obj["metadata"].pop("tied", None)

        runs = [
            *_arc_runs(),
            Run(["unpack", "in/a.llmc", "-o", "out/t", "--tied", "auto"]),
            Run(["from_pretrained", "in/a.llmc"]),
        ]
        yield Case(f"config.json {variant} + evil.py", "code in attachments", runs), b.forge("exact", code)
    deep_json = b"[" * 100_000 + b"]" * 100_000
    for name in ("config.json", "tokenizer_config.json"):

        def dj(m: Any, name: str = name) -> None:
            a = m.attachment_dicts()[0]
            a["name"], a["encoding"], a["size"] = name, "raw", len(deep_json)
            m.payload[id(a["blob"])] = deep_json

        runs = [
            *_arc_runs(),
            Run(["unpack", "in/a.llmc", "-o", "out/g", "--format", "gguf"]),
            Run(["unpack", "in/a.llmc", "-o", "out/h", "--dtype", "bf16"]),
        ]
        yield Case(f"deep JSON {name}", "deep JSON config", runs), b.forge("exact", dj)

    # -- the container core (quick baseline: these were fine before) -------------------------
    def damaged(what: str) -> Callable[[], bytes]:
        def make() -> bytes:
            data = b.exact.read_bytes()
            return {
                "truncated": data[: len(data) // 2],
                "empty": b"",
                "not llmc": b"hello" * 100,
                "bit flip": data[:200] + bytes([data[200] ^ 1]) + data[201:],
            }[what]

        return make

    for what in ("truncated", "empty", "bit flip", "not llmc"):
        yield (
            Case(f"container: {what}", "container (baseline)", _arc_runs("inspect", "verify")),
            damaged(what),
        )


def _unpacked_is_archive(case_dir: Path, runs: list[Run]) -> list[str]:
    """If verify and unpack both succeeded, the unpacked weights must be the archive's."""
    ok = {r.args[0] for r in runs if r.code == 0}
    if not {"verify", "unpack"} <= ok or not (case_dir / "out/u").is_dir():
        return []
    done = subprocess.run(
        [sys.executable, "-c", CHECK_UNPACKED, str(case_dir / "out/u"), str(case_dir / "in/a.llmc")],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=TIMEOUT,
    )
    msg = (done.stdout + done.stderr).strip()
    return [f"verified but unpacked differently: {msg[-300:]}"] if msg else []


def _model_dir(
    case_dir: Path,
    tensors: dict[str, np.ndarray] | None = None,
    config: bytes | None = b'{"model_type": "llama"}',
) -> Path:
    from safetensors.numpy import save_file

    d = case_dir / "in" / "model"
    d.mkdir(parents=True, exist_ok=True)
    save_file(tensors or {"w": np.ones((4, 4), np.float32)}, str(d / "model.safetensors"))
    if config is not None:
        (d / "config.json").write_bytes(config)
    return d


PACK = Run(["pack", "in/model", "-o", "out/m.llmc"])


def model_cases(marker: str) -> Iterator[Case]:
    """Hostile model directories and file-system tricks around pack/unpack."""

    def setup_symlink(c: Path) -> None:
        d = _model_dir(c)
        os.symlink(c / "victim", d / "tokenizer.json")

    yield Case(
        "model dir: symlink to a file outside",
        "symlinks in model dirs",
        [Run(["pack", "in/model", "-o", "out/m.llmc"])],
        setup_symlink,
        check=_archive_lacks("victim secret"),
    )

    def setup_dirlink(c: Path) -> None:
        d = _model_dir(c)
        os.symlink(c, d / "up")

    yield Case(
        "model dir: symlink to its parent",
        "symlinks in model dirs",
        [Run(list(PACK.args))],
        setup_dirlink,
        check=_archive_lacks("victim secret"),
    )

    evil_py = f"import pathlib\npathlib.Path({marker!r}).write_text('pwned')\n"

    def setup_automap(c: Path) -> None:
        cfg = {
            "model_type": "evil",
            "tie_word_embeddings": True,
            "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilForCausalLM"},
        }
        d = _model_dir(
            c,
            {
                "model.embed_tokens.weight": np.ones((8, 4), np.float32),
                "lm_head.weight": np.ones((8, 4), np.float32),
            },
            json.dumps(cfg).encode(),
        )
        (d / "evil.py").write_text(evil_py)

    yield Case(
        "model dir: auto_map + evil.py",
        "code in model dirs",
        [
            Run(list(PACK.args)),
            Run(["unpack", "out/m.llmc", "-o", "out/u"]),
            Run(
                [
                    "pack",
                    "in/model",
                    "-o",
                    "out/t.llmc",
                    "--codec",
                    "vvc",
                    "--bpw",
                    "3",
                    "--min-lossy-numel",
                    "1",
                ]
            ),
        ],
        setup_automap,
    )

    def setup_pickle(c: Path) -> None:
        import pickle

        class Evil:
            def __reduce__(self) -> tuple[Any, ...]:
                return (exec, (evil_py,))

        d = c / "in" / "model"
        d.mkdir(parents=True)
        (d / "pytorch_model.bin").write_bytes(pickle.dumps(Evil()))

    yield Case("model dir: malicious pickle", "code in model dirs", [Run(list(PACK.args))], setup_pickle)

    def setup_fifo_config(c: Path) -> None:
        d = _model_dir(c, config=None)
        os.mkfifo(d / "config.json")

    yield Case(
        "model dir: FIFO named config.json", "special files", [Run(list(PACK.args))], setup_fifo_config
    )

    def setup_fifo_weights(c: Path) -> None:
        d = c / "in" / "model"
        d.mkdir(parents=True)
        os.mkfifo(d / "model.safetensors")

    yield Case(
        "model dir: FIFO named model.safetensors", "special files", [Run(list(PACK.args))], setup_fifo_weights
    )

    def setup_deep(c: Path) -> None:
        _model_dir(c, config=b"[" * 100_000 + b"]" * 100_000)

    yield Case(
        "model dir: deep JSON config.json",
        "deep JSON config",
        [
            Run(list(PACK.args)),
            Run(["unpack", "out/m.llmc", "-o", "out/u", "--dtype", "bf16"]),
            Run(["unpack", "out/m.llmc", "-o", "out/g", "--format", "gguf"]),
        ],
        setup_deep,
    )

    def setup_index(c: Path) -> None:
        d = _model_dir(c)
        (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "../../victim"}}))

    yield Case(
        "model dir: index json shard ../../victim", "model dir lies", [Run(list(PACK.args))], setup_index
    )

    def setup_deep_index(c: Path) -> None:
        d = _model_dir(c)
        (d / "model.safetensors.index.json").write_bytes(b"[" * 100_000 + b"]" * 100_000)

    yield Case("model dir: deep JSON index", "deep JSON config", [Run(list(PACK.args))], setup_deep_index)

    def setup_header(c: Path) -> None:
        d = c / "in" / "model"
        d.mkdir(parents=True)
        header = (
            b'{"__metadata__": {"a": "b"}, "w": {"dtype": "F32", "shape": [4, 4], '
            b'"data_offsets": [0, 64]}, "x[/]\\u001b[2J": {"dtype": "F32", "shape": [1], '
            b'"data_offsets": [64, 68]}}'
        )
        (d / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bytes(68))

    yield Case(
        "model dir: markup/escape tensor names",
        "names (collisions, markup, escapes)",
        [Run(list(PACK.args)), Run(["inspect", "out/m.llmc"]), Run(["verify", "out/m.llmc"], (0, 1))],
        setup_header,
    )

    # -- outputs ---------------------------------------------------------------------------
    def setup_planted(c: Path) -> None:
        _model_dir(c)
        out = c / "out"
        out.mkdir(exist_ok=True)
        for name in (".m.llmc.partial", ".m.llmc.partial.journal", ".m.llmc.rd"):
            os.symlink(c / "victim", out / name)

    yield Case("symlinks planted at temp names", "planted temp names", [Run(list(PACK.args))], setup_planted)

    def setup_same(c: Path) -> None:
        _model_dir(c)

    yield Case(
        "-o equal to the source",
        "-o equal to source",
        [Run(["pack", "in/model/model.safetensors", "-o", "in/model/model.safetensors", "--force"])],
        setup_same,
    )
    yield Case(
        "-o inside the source dir",
        "-o equal to source",
        [Run(["pack", "in/model", "-o", "in/model/m.llmc", "--force"])],
        setup_same,
    )

    def setup_fifo_out(c: Path) -> None:
        _model_dir(c)
        (c / "out").mkdir(exist_ok=True)
        os.mkfifo(c / "out" / "m.llmc")

    yield Case(
        "FIFO as the output (--force)",
        "FIFO as input/output",
        [Run(["pack", "in/model", "-o", "out/m.llmc", "--force"])],
        setup_fifo_out,
        check=_still_fifo("out/m.llmc"),
    )
    yield Case(
        "-o under a missing directory",
        "outputs",
        [Run(["pack", "in/model", "-o", "out/missing/m.llmc"])],
        setup_same,
    )

    def setup_dir_out(c: Path) -> None:
        _model_dir(c)
        (c / "out" / "m.llmc").mkdir(parents=True)

    yield Case(
        "-o an existing directory (--force)",
        "outputs",
        [Run(["pack", "in/model", "-o", "out/m.llmc", "--force"])],
        setup_dir_out,
    )
    yield Case(
        "two concurrent packs to one output",
        "concurrent packs",
        [Run(["pack", "in/model", "-o", "out/m.llmc"]), Run(["pack", "in/model", "-o", "out/m.llmc"])],
        _concurrent_setup,
        check=_concurrent_check,
        concurrent=True,
    )
    yield Case(
        "disk full during pack (RLIMIT_FSIZE)",
        "disk full",
        [Run(list(PACK.args))],
        _big_model,
        fsize=64 << 10,
    )

    def setup_unpack_full(c: Path) -> None:
        import llmc_format

        (c / "in").mkdir(parents=True)
        rng = np.random.default_rng(1)
        llmc_format.save_file(
            {"w": rng.standard_normal((256, 256)).astype(np.float32)}, c / "in" / "a.llmc", jobs=1
        )

    yield Case(
        "disk full during unpack/extract",
        "disk full",
        [Run(["unpack", "in/a.llmc", "-o", "out/u"]), Run(["extract", "in/a.llmc", "w", "-o", "out/w"])],
        setup_unpack_full,
        fsize=64 << 10,
    )

    # -- special files as the input of every command ----------------------------------------
    for kind in ("fifo", "directory", "socket", "device"):

        def setup_special(c: Path, kind: str = kind) -> None:
            p = c / "in" / "s.llmc"
            p.parent.mkdir(parents=True, exist_ok=True)
            if kind == "fifo":
                os.mkfifo(p)
            elif kind == "directory":
                p.mkdir()
            elif kind == "socket":
                s = socket.socket(socket.AF_UNIX)
                s.bind(str(p))
                s.close()
            else:
                os.symlink(os.devnull, p)

        arc = "in/s.llmc"
        runs = [
            Run(["inspect", arc]),
            Run(["verify", arc], (1,)),
            Run(["unpack", arc, "-o", "out/u"]),
            Run(["extract", arc, "w"]),
            Run(["repack", arc, "-o", "out/r.llmc", "--bpw", "2"]),
            Run(["pack", arc, "-o", "out/p.llmc"]),
            Run(["api", arc]),
        ]
        yield Case(f"{kind} as the input", "special files", runs, setup_special)


def _big_model(c: Path) -> None:
    rng = np.random.default_rng(2)
    _model_dir(c, {"w": rng.standard_normal((256, 512)).astype(np.float32)})


def _concurrent_setup(c: Path) -> None:
    rng = np.random.default_rng(3)
    _model_dir(c, {"w": rng.standard_normal((512, 512)).astype(np.float32)})


def _concurrent_check(c: Path, runs: list[Run]) -> list[str]:
    from llmc_format.pipeline.verify import verify

    problems = []
    out = c / "out" / "m.llmc"
    if out.exists() and not verify(out).ok:
        problems.append("the output of two concurrent packs is corrupt")
    if all(r.code == 0 for r in runs):
        problems.append("both concurrent packs reported success (no lock)")
    leftovers = [p.name for p in (c / "out").iterdir() if p.name != "m.llmc"]
    if leftovers:
        problems.append(f"temp files left: {leftovers}")
    return problems


def _archive_lacks(secret: str) -> Callable[[Path, list[Run]], list[str]]:
    def check(c: Path, runs: list[Run]) -> list[str]:
        out = c / "out" / "m.llmc"
        if out.exists() and secret.encode() in out.read_bytes():
            return ["a file from outside the model directory was packed"]
        return []

    return check


def _still_fifo(rel: str) -> Callable[[Path, list[Run]], list[str]]:
    def check(c: Path, runs: list[Run]) -> list[str]:
        import stat

        p = c / rel
        return [] if p.exists() and stat.S_ISFIFO(p.lstat().st_mode) else [f"{rel} (a FIFO) was replaced"]

    return check


# =========================================================================== running


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "LLMC_DEBUG"}
    env["PYTHONPATH"] = str(ROOT)
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    return env


def _argv(args: list[str]) -> list[str]:
    if args[0] == "api":
        return [sys.executable, "-c", API_PROBE, *args[1:]]
    if args[0] == "from_pretrained":
        code = (
            "import sys\nfrom llmc_format.errors import LlmcError\n"
            "from llmc_format.transformers import from_pretrained\n"
            "try:\n    from_pretrained(sys.argv[1])\nexcept LlmcError:\n    sys.exit(3)\n"
        )
        return [sys.executable, "-c", code, *args[1:]]
    return [sys.executable, "-m", "llmc_format.cli", *args]


def _limits(fsize: int | None) -> Callable[[], None]:
    def apply() -> None:
        os.setsid()
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
        if fsize is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return apply


def _snapshot(case_dir: Path) -> dict[str, str]:
    """path -> content digest (or link target / kind) of everything outside out/."""
    import stat

    out: dict[str, str] = {}
    for root, dirs, files in os.walk(case_dir):
        rel_root = Path(root).relative_to(case_dir)
        if rel_root.parts[:1] == ("out",):
            dirs[:] = []
            continue
        for name in files + [d for d in dirs if (Path(root) / d).is_symlink()]:
            p = Path(root) / name
            rel = str(rel_root / name)
            if rel == "PWNED":  # counted as code executed, not as an outside write
                continue
            if rel.startswith("out/") or rel == "out":
                continue
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = "link:" + os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[rel] = f"mode:{stat.S_IFMT(st.st_mode)}"
    return out


def _start(run: Run, case_dir: Path, fsize: int | None) -> tuple[subprocess.Popen[bytes], float, Any]:
    err = tempfile.TemporaryFile()  # noqa: SIM115 - closed in _finish
    proc = subprocess.Popen(
        _argv(run.args),
        cwd=case_dir,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=err,
        env=_env(),
        preexec_fn=_limits(fsize),
    )
    with contextlib.suppress(OSError):  # answer "y" to any prompt (trust_remote_code...)
        assert proc.stdin is not None
        proc.stdin.write(b"y\n" * 64)
        proc.stdin.close()
    return proc, time.monotonic(), err


def _finish(run: Run, proc: subprocess.Popen[bytes], t0: float, err: Any) -> None:
    deadline = t0 + TIMEOUT
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            pid, status, usage = os.wait4(proc.pid, 0)
            run.findings.append(f"hang (> {TIMEOUT:.0f} s)")
            break
        time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    run.code = proc.returncode
    run.seconds = time.monotonic() - t0
    run.rss = usage.ru_maxrss * 1024
    err.seek(0)
    run.stderr = err.read().decode("utf-8", "replace")
    err.close()
    if "Traceback" in run.stderr or "internal error" in run.stderr:
        run.findings.append("traceback: " + _last_line(run.stderr))
    elif not any("hang" in f for f in run.findings) and run.code not in run.allowed:
        run.findings.append(f"exit {run.code}: {_last_line(run.stderr)}")
    if run.rss > RSS_GOAL:
        run.other.append(f"peak RSS {run.rss / 2**20:.0f} MiB")


def _last_line(text: str) -> str:
    lines = [x for x in text.strip().splitlines() if x.strip()]
    return lines[-1][:200] if lines else ""


def run_case(
    case: Case, case_dir: Path, data: Callable[[], bytes] | None, marker: str | Path = "PWNED"
) -> None:
    case_dir.mkdir(parents=True)
    (case_dir / "victim").write_text("victim secret\n")
    if data is not None:
        _write(case_dir, data())
    if case.setup is not None:
        case.setup(case_dir)
    (case_dir / "out").mkdir(exist_ok=True)
    before = _snapshot(case_dir)
    if case.concurrent:
        started = [_start(r, case_dir, case.fsize) for r in case.runs]
        for r, (proc, t0, err) in zip(case.runs, started, strict=True):
            _finish(r, proc, t0, err)
    for r in [] if case.concurrent else case.runs:
        _finish(r, *_start(r, case_dir, case.fsize))
        if (case_dir / marker).exists():  # attributed to the run that wrote it
            r.findings.append("code executed (marker file written)")
            (case_dir / marker).unlink()
        after = _snapshot(case_dir)
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        if changed:
            r.findings.append(f"outside writes: {changed[:4]}")
            before = after
    if (case_dir / marker).exists():
        case.runs[-1].findings.append("code executed (marker file written)")
    if case.check is not None:
        case.runs[-1].other.extend(case.check(case_dir, case.runs))


@dataclass
class Totals:
    inputs: int = 0
    runs: int = 0
    tracebacks: int = 0
    hangs: int = 0
    outside: int = 0
    code: int = 0
    peak_rss: int = 0
    other: int = 0
    seconds: float = 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default=None, help="where cases are built (default: a temp dir)")
    parser.add_argument("--out", default=None, help="write the Markdown report here")
    parser.add_argument("--only", default="", help="comma-separated words: cases whose name has one")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="cases run at once")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="llmc-hostile-"))
    work.mkdir(parents=True, exist_ok=True)
    marker = "PWNED"  # relative: hostile code runs with the case directory as its cwd
    t_start = time.monotonic()
    builder = Builder(work / "base")
    builder.exact, builder.qp, builder.rd  # noqa: B018 - built once, before the threads
    cases: list[tuple[Case, Callable[[], bytes] | None]] = list(archive_cases(builder, marker))
    cases += [(c, None) for c in model_cases(marker)]
    words = [w for w in args.only.split(",") if w]
    if words:
        cases = [(c, d) for c, d in cases if any(w in c.name for w in words)]
    totals = Totals(inputs=len(cases))
    rows = []
    from concurrent.futures import ThreadPoolExecutor

    def one(item: tuple[int, tuple[Case, Callable[[], bytes] | None]]) -> Case:
        i, (case, data) = item
        run_case(case, work / f"case{i:03d}", data, marker)
        return case

    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        done = list(pool.map(one, enumerate(cases)))
    for i, case in enumerate(done):
        for r in case.runs:
            totals.runs += 1
            totals.tracebacks += sum(f.startswith(("traceback", "exit")) for f in r.findings)
            totals.hangs += sum(f.startswith("hang") for f in r.findings)
            totals.outside += sum(f.startswith("outside") for f in r.findings)
            totals.code += sum(f.startswith("code executed") for f in r.findings)
            totals.other += len([o for o in r.other if not o.startswith("peak RSS")])
            totals.peak_rss = max(totals.peak_rss, r.rss)
        worst = max(case.runs, key=lambda r: r.rss)
        findings = [f"`{' '.join(r.args[:1])}`: {f}" for r in case.runs for f in r.findings]
        other = [f"`{' '.join(r.args[:1])}`: {o}" for r in case.runs for o in r.other]
        codes = " ".join(str(r.code) for r in case.runs)
        rows.append((case.klass, case.name, len(case.runs), codes, worst.rss, findings, other))
        print(
            f"[{i + 1}/{len(cases)}] {case.name}: exits {codes}, peak {worst.rss / 2**20:.0f} MiB"
            + "".join(f"\n    FINDING {f}" for f in findings)
            + "".join(f"\n    other: {o}" for o in other),
            flush=True,
        )
    totals.seconds = time.monotonic() - t_start
    shown = [a for a, prev in zip(sys.argv[1:], ["", *sys.argv[1:]], strict=False)
             if a != "--workdir" and prev != "--workdir"]  # no machine's temp path in reports
    report = _report(totals, rows, " ".join(shown))
    print(report.split("\n## Cases")[0])
    if args.out:
        Path(args.out).write_text(report)
    if not args.keep and args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    bad = totals.tracebacks + totals.hangs + totals.outside + totals.code
    return 1 if bad else 0


def _report(t: Totals, rows: list[tuple[Any, ...]], argv: str) -> str:
    lines = [
        "# Clean-room run: hostile archives and model directories (issue 17)",
        "",
        f"Command: `python tools/hostile_inputs.py {argv}`".rstrip() + "  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {t.seconds:.0f} s.",
        "",
        "Each command ran as its own subprocess under `RLIMIT_AS` = "
        f"{ADDRESS_SPACE >> 30} GiB and a {TIMEOUT:.0f} s timeout, stdin fed `y` lines.",
        "",
        "| inputs | command runs | tracebacks | hangs | outside writes | code executed | "
        "peak RSS | other findings |",
        "|---|---|---|---|---|---|---|---|",
        f"| {t.inputs} | {t.runs} | {t.tracebacks} | {t.hangs} | {t.outside} | {t.code} | "
        f"{t.peak_rss / 2**20:.0f} MiB | {t.other} |",
        "",
        "## Cases",
        "",
        "| class | case | runs | exit codes | peak RSS | findings |",
        "|---|---|---|---|---|---|",
    ]
    for klass, name, n, codes, rss, findings, other in rows:
        text = "; ".join(findings + other).replace("|", "\\|") or "-"
        safe = name.encode("unicode_escape").decode("ascii").replace("|", "\\|")
        lines.append(f"| {klass} | {safe} | {n} | {codes} | {rss / 2**20:.0f} MiB | {text} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
