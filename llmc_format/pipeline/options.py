"""``PackOptions``: every option of a pack, validated once, for ``llmc pack`` and the API.

Both ``llmc pack`` and ``llmc_format.pack``/``save_file`` build a ``PackOptions`` and hand
it to ``run_pack``, so the same options give the same archive byte for byte, with the same
defaults (documented here, once: the field comments below).

Validation happens in three steps, all before any tensor is encoded and before the output
path is touched, so a mistake costs nothing and leaves nothing behind:

1. ``PackOptions(...)`` itself (``__post_init__``): option values and combinations,
   including each codec's own limits (QP range, bit depth, presets) taken from the codec
   classes. A bad value raises ``UsageError`` (the command's exit code 2).
2. ``check_paths``: the source exists, the output is not ``-``, not a directory, and does
   not exist unless ``force``.
3. ``check_source``: what can only be known from the tensor list (globs that match no
   tensor, a lossy codec under which no tensor is lossy, a size smaller than what the
   file must hold anyway).

What does nothing is reported in ``warnings`` (``--qp`` without a lossy codec, ``--qp``
with a target, ``--lossy`` without a lossy codec...), never silently dropped.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmc_format.errors import CodecError, EncoderMissingError, LlmcError, SourceError, UsageError
from llmc_format.pipeline.policy import TRANSFORMS, Policy, codec_choices, final_codec

#: the defaults of the options the user may leave out (``None`` below = "not given")
DEFAULT_QP = 37
DEFAULT_BITS = 10
DEFAULT_MIN_LOSSY_NUMEL = 16384
WEIGHTINGS = ("auto", "nmse", "mse")
SCALINGS = ("row", "tensor")
EXECUTORS = ("local", "ray")
#: a lossy tensor under this SNR has lost most of its information: a target driving a
#: tensor there gets a warning (the error power is a sixth of the signal's)
LOW_SNR_DB = 8.0


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean X?)`` for the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _choice(option: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise UsageError(f"{option}: {value!r} is not one of {', '.join(choices)}"
                         f"{did_you_mean(value, choices)}")


@dataclass(frozen=True)
class PackOptions:
    """Everything that decides a pack, with the defaults of ``llmc pack``.

    ``None`` means "not given": ``qp`` is then 37 for a fixed-QP pack, ``bits`` 10.
    """

    #: ``exact`` (lossless) or a video codec: vvc, hevc, av1 (lossy), ffv1 (lossless video);
    #: any codec registered by entry point (``policy.codec_choices``)
    codec: str = "exact"
    #: the lossy codec's quantizer for a fixed-QP pack (default 37); a target chooses its own
    qp: int | None = None
    #: targets (at most one): all-in bits per lossy weight, whole-file size, SNR floor in dB
    bpw: float | None = None
    size: str | int | None = None
    snr: float | None = None
    #: RD weighting per tensor without calibration: auto (self-calibration when
    #: transformers can build the model, up to 2 B weights, else nmse), nmse or mse
    weighting: str = "auto"
    #: let a size/bpw target be exceeded by up to its 2% tolerance
    allow_over: bool = False
    #: a calibration text file, or "self" (text the model samples itself)
    calibration: str | os.PathLike[str] | None = None
    #: encoder preset (vvc: faster, fast, medium...); default: the codec's
    preset: str | None = None
    #: bit depth of the quantization before video coding (default 10)
    bits: int | None = None
    #: affine scaling: row or tensor (default: row for a fixed QP, tensor under a target)
    scaling: str | None = None
    #: auto (dct under a target with vvc/hevc, else none), none (affine codes) or dct
    transform: str = "auto"
    #: globs of tensor names to code lossy / keep exact (exact wins)
    lossy: tuple[str, ...] = ()
    lossless: tuple[str, ...] = ()
    #: tensors with fewer elements stay exact
    min_lossy_numel: int = DEFAULT_MIN_LOSSY_NUMEL
    #: tensors encoded at once (default: all cores)
    jobs: int | None = None
    #: local (threads) or ray
    executor: str = "local"
    ray_address: str | None = None
    #: user metadata stored in the archive
    metadata: Mapping[str, Any] = field(default_factory=dict)
    #: creation time to record (None: none, the archive is reproducible)
    created: str | None = None
    #: record per-tensor encode/decode seconds
    record_timings: bool = False
    #: continue an interrupted fixed-QP pack
    resume: bool = False
    #: extra codec settings of the API (``video=``/``affine=`` of ``Policy``)
    video: Mapping[str, Any] = field(default_factory=dict)
    affine: Mapping[str, Any] = field(default_factory=dict)
    #: API only (no CLI flag): tensor name -> (col_scale, row_scale) multipliers of a
    #: ``diagscale`` stage put in front of that tensor's quantization when it goes lossy
    #: (``Policy.diagscale``; their meaning: ``llmc_format/codecs/diagscale.py``)
    diagscale: Mapping[str, Any] = field(default_factory=dict)
    #: option names the caller gave explicitly (for "has no effect" warnings)
    given: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "lossy", tuple(self.lossy))
        object.__setattr__(self, "lossless", tuple(self.lossless))
        from llmc_format.codecs.diagscale import DiagScales

        try:  # rounded to binary16 once, here
            scales = DiagScales.by_name(self.diagscale)
        except CodecError as exc:
            raise UsageError(str(exc)) from None
        object.__setattr__(self, "diagscale", scales)
        self._validate()

    # ------------------------------------------------------------------ derived values

    @property
    def target_kind(self) -> str | None:
        for kind in ("bpw", "size", "snr"):
            if getattr(self, kind) is not None:
                return kind
        return None

    @property
    def targeted(self) -> bool:
        return self.target_kind is not None

    @property
    def lossy_codec(self) -> bool:
        """Whether the codec codes tensors lossy (a QP to set or to choose)."""
        cls = final_codec(self.codec)
        return bool(cls.takes_samples and cls.qp_range)

    def target(self) -> Any:
        from llmc_format.pipeline.target import Target

        size = None if self.size is None else str(self.size)
        return Target.parse(size=size, bpw=self.bpw, snr=self.snr, allow_over=self.allow_over)

    def policy(self) -> Policy:
        affine = dict(self.affine)
        if self.scaling is not None:
            affine["granularity"] = self.scaling
        return Policy(codec=self.codec, qp=DEFAULT_QP if self.qp is None else self.qp,
                      preset=self.preset, bits=DEFAULT_BITS if self.bits is None else self.bits,
                      affine=affine, video=dict(self.video), transform=self.transform,
                      min_lossy_numel=self.min_lossy_numel, lossy_patterns=self.lossy,
                      lossless_patterns=self.lossless, lossy_embeddings=self.targeted,
                      diagscale=self.diagscale)

    def calibration_text(self) -> str | None:
        """The calibration text: a file's contents, ``SELF``, or None."""
        from llmc_format.rd.calibration import SELF

        if self.calibration is None or self.calibration == SELF:
            return None if self.calibration is None else SELF
        return Path(self.calibration).read_text(errors="replace")

    # ------------------------------------------------------------------ validation

    def _validate(self) -> None:
        _choice("--codec", self.codec, codec_choices())
        _choice("--weighting", self.weighting, WEIGHTINGS)
        _choice("--transform", self.transform, TRANSFORMS)
        _choice("--executor", self.executor, EXECUTORS)
        if self.scaling is not None:
            _choice("--scaling", self.scaling, SCALINGS)
        targets = [k for k in ("bpw", "size", "snr") if getattr(self, k) is not None]
        if len(targets) > 1:
            raise UsageError(f"give one target, not {' and '.join('--' + t for t in targets)}")
        for name in ("bpw", "snr"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and v > 0 and v == v
                                      and v != float("inf")):
                raise UsageError(f"--{name} must be a positive number, got {v!r}")
        if self.size is not None:
            from llmc_format.units import parse_size

            try:
                size = parse_size(str(self.size))
            except LlmcError:
                raise UsageError(f"--size: {self.size!r} is not a size (e.g. 60MB, 1.5GiB, "
                                 "40000000)") from None
            if size <= 0:
                raise UsageError(f"--size must be more than 0 bytes, got {self.size!r}")
        if self.jobs is not None and (not isinstance(self.jobs, int) or self.jobs < 1):
            raise UsageError(f"--jobs must be at least 1, got {self.jobs!r}")
        if not isinstance(self.min_lossy_numel, int) or self.min_lossy_numel < 0:
            raise UsageError(f"--min-lossy-numel must be >= 0, got {self.min_lossy_numel!r}")
        if self.ray_address is not None and self.executor != "ray":
            raise UsageError("--ray-address needs --executor ray")
        if self.transform == "dct" and self.scaling is not None:
            raise UsageError("--transform dct has its own per-tensor scale: drop --scaling")
        if self.targeted:
            from llmc_format.pipeline.target import target_codecs

            if self.codec not in target_codecs():
                hint = " (add --codec vvc)" if self.codec == "exact" else ""
                raise UsageError(f"--{self.target_kind} needs a lossy codec with a QP to "
                                 f"choose ({', '.join(target_codecs())}), not --codec "
                                 f"{self.codec}{hint}")
            if self.resume:
                raise UsageError("--resume works with a fixed --qp pack, not with "
                                 "--bpw/--size/--snr")
        elif self.scaling == "tensor" or self.transform == "dct":
            what = "--scaling tensor" if self.scaling == "tensor" else "--transform dct"
            raise UsageError(f"{what} needs a target (--bpw, --size or --snr): with one QP "
                             "for every tensor, a tensor's outliers would set the step of "
                             "all its weights (docs/results/tuning.md §2)")
        try:
            self.policy()  # the codec's own rules (e.g. which take --transform dct)
        except SourceError as exc:
            raise UsageError(str(exc)) from None
        if self.calibration is not None:
            from llmc_format.rd.calibration import SELF

            if self.calibration != SELF and not Path(self.calibration).is_file():
                raise UsageError(f"--calibration: no such file {str(self.calibration)!r} "
                                 "(or give 'self')")
        self._validate_codec_settings()

    def _validate_codec_settings(self) -> None:
        """QP, bit depth and preset as the codecs themselves check them (their classes
        hold the ranges), on a stand-in tensor, without encoding anything."""
        if not final_codec(self.codec).takes_samples:
            return
        from llmc_format.codecs.stages import build

        policy = self.policy()
        if self.targeted:
            from llmc_format.pipeline.target import with_target_scaling

            policy = with_target_scaling(policy)
        qp = None
        if self.targeted and self.lossy_codec:
            from llmc_format.pipeline.target import _qrange

            qp = _qrange(self.codec)[0]  # the target chooses; any valid QP checks the rest
        config = policy.pipeline("x.weight", "float32", (1024, 1024), qp)
        if len(config) == 1:  # pragma: no cover - a large float matrix is lossy here
            return
        try:
            build(config, "options")
        except EncoderMissingError:
            return  # reported when encoding starts, with how to install it
        except CodecError as exc:
            msg = str(exc).removeprefix("options: ")
            for key in ("qp", "bits", "preset"):
                if msg.startswith(key) or f"{key}=" in msg or f" {key} " in msg:
                    raise UsageError(f"--{key}: {msg}") from None
            raise UsageError(msg) from None

    def warnings(self) -> list[str]:
        """Options that were given but change nothing, in plain words."""
        out: list[str] = []
        g = self.given
        if not final_codec(self.codec).takes_samples:
            dropped = [f"--{k}" for k in ("qp", "preset", "bits", "scaling", "lossy")
                       if k in g]
            if "transform" in g and self.transform != "auto":
                dropped.append("--transform")
            if dropped:
                out.append(f"{', '.join(dropped)} {'has' if len(dropped) == 1 else 'have'} "
                           f"no effect with --codec {self.codec} (lossless): every tensor is "
                           "stored exactly; add --codec vvc (or hevc, av1) to code tensors "
                           "lossy")
        elif not self.lossy_codec and any(k in g for k in ("qp", "preset")):
            out.append(f"--qp/--preset have no effect with --codec {self.codec} (a lossless "
                       "video codec)")
        if self.targeted and "qp" in g:
            out.append(f"--qp {self.qp} has no effect with --{self.target_kind}: the target "
                       "chooses each tensor's QP")
        if not self.targeted:
            for k in ("weighting", "calibration", "allow_over"):
                if k in g and getattr(self, k) not in (None, False, "auto"):
                    out.append(f"--{k.replace('_', '-')} has no effect without a target "
                               "(--bpw, --size or --snr)")
        elif self.allow_over and self.snr is not None:
            out.append("--allow-over has no effect with --snr (only size and bpw targets "
                       "have a ceiling)")
        if self.calibration is not None and "weighting" in g and self.weighting != "auto":
            out.append(f"--weighting {self.weighting} has no effect with --calibration "
                       "(the calibration gradients weigh the tensors)")
        return out


def check_paths(src: str | os.PathLike[str] | None, dst: str | os.PathLike[str], *,
                force: bool) -> None:
    """Refuse what cannot be the source or the output, before any work."""
    from llmc_format.errors import ArchiveNotFoundError

    if str(dst) == "-":
        raise UsageError("-o -: llmc writes archives to files only (an archive is written "
                         "out of order, then renamed into place); give a file name")
    out = Path(dst)
    # path problems are llmc errors (exit 3), as for every command's output
    if str(dst).endswith(("/", os.sep)) and not out.is_dir():  # not a file named 'out'
        raise LlmcError(f"-o {dst}: names a directory (ends in /); give the .llmc file to write")
    if out.is_dir():
        raise LlmcError(f"-o {out}: is a directory; give the .llmc file to write")
    if out.exists() and not force:
        raise LlmcError(f"{out} exists; pass --force to overwrite it")
    if not out.parent.is_dir():
        raise LlmcError(f"-o {out}: No such file or directory: {str(out.parent)!r}")
    if src is not None:
        s = Path(src)
        if not s.exists():
            raise ArchiveNotFoundError(f"{s}: no such file or directory")
        if out.exists() and s.exists() and out.resolve() == s.resolve():
            raise LlmcError(f"-o {out} is the source itself")


def _is_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


def check_source(options: PackOptions, names: Sequence[str], specs: Mapping[str, Any],
                 attachment_bytes: int) -> list[str]:
    """Checks that need the tensor list; returns warnings, raises on what cannot work.

    ``specs`` maps names to objects with ``dtype`` and ``shape``.
    """
    out: list[str] = []
    for option, patterns in (("--lossy", options.lossy), ("--lossless", options.lossless)):
        for p in patterns:
            if any(fnmatch.fnmatchcase(n, p) for n in names):
                continue
            if _is_glob(p):
                out.append(f"{option} {p!r} matches no tensor")
            else:
                raise UsageError(f"{option} {p!r}: no tensor of that name"
                                 f"{did_you_mean(p, names)} (a glob such as '*{p}*' "
                                 "matches parts of names)")
    for name, scales in options.policy().diagscale.items():
        if name not in specs:
            raise UsageError(f"diagscale: no tensor named {name!r}{did_you_mean(name, names)}")
        try:
            scales.check_shape(specs[name].shape, name)
        except CodecError as exc:
            raise UsageError(str(exc)) from None
    if final_codec(options.codec).takes_samples:
        policy = options.policy()
        lossy = [n for n in names if policy.is_lossy(n, specs[n].dtype, specs[n].shape)]
        if not lossy:
            kept = ("1-D tensors" if options.targeted
                    else "1-D tensors, embeddings and output heads")
            msg = (f"no tensor is coded with {options.codec} under these options (tensors "
                   f"under {options.min_lossy_numel:,} elements and {kept} stay exact; "
                   "--lossy GLOB names others)")
            if options.targeted:
                raise UsageError(f"{msg}: nothing for --{options.target_kind} to optimize")
            out.append(f"{msg}: the archive is lossless")
    if options.size is not None:
        from llmc_format.container import layout
        from llmc_format.units import format_size, parse_size

        floor = attachment_bytes + layout.HEADER_SIZE + layout.FOOTER_SIZE
        want = parse_size(str(options.size))
        if want < floor:
            raise UsageError(f"--size {format_size(want)} is impossible: the attachments "
                             f"(config, tokenizer) and file structure alone take "
                             f"{format_size(floor)}; the smallest achievable size is larger")
    return out


def from_api(**kwargs: Any) -> PackOptions:
    """``PackOptions`` from the keyword arguments of ``llmc_format.pack``/``save_file``.

    Accepts the ``Policy`` names too (``lossy_patterns``, ``lossless_patterns``, an
    ``affine`` granularity) and refuses unknown names with the closest known one.
    """
    known = {f for f in PackOptions.__dataclass_fields__ if f != "given"}
    aliases = {"lossy_patterns": "lossy", "lossless_patterns": "lossless",
               "user_metadata": "metadata"}
    opts: dict[str, Any] = {}
    for key, value in kwargs.items():
        key = aliases.get(key, key)
        if key not in known:
            raise UsageError(f"unknown pack option {key!r}{did_you_mean(key, known)}")
        opts[key] = value
    affine = dict(opts.get("affine") or {})
    if "granularity" in affine and "scaling" not in opts:
        opts["scaling"] = affine.pop("granularity")
        opts["affine"] = affine
    if opts.get("metadata") is None:
        opts.pop("metadata", None)
    for key in ("lossy", "lossless"):
        if isinstance(opts.get(key), str):
            opts[key] = (opts[key],)
        elif opts.get(key) is None:
            opts.pop(key, None)
    given = frozenset(k for k, v in opts.items() if v is not None)
    return PackOptions(**opts, given=given)


#: progress(event, name, done, total) as the pack pipeline reports it
Progress = Callable[[str, str, int, int], None]


def run_pack(options: PackOptions, source: Any, dst: str | os.PathLike[str], *,
             progress: Progress | None = None, executor: Any = None,
             warn: Callable[[str], None] | None = None) -> dict[str, Any] | None:
    """Pack the open ``source`` into ``dst`` with ``options``: what ``llmc pack`` and
    ``llmc_format.pack`` both run. Returns the RD summary of a target pack, else None.

    ``warn`` receives the warnings of ``check_source`` (before any encoding).
    """
    from llmc_format.pipeline.pack import pack_source

    # an output absent now must still be absent when it is renamed into place: another
    # pack to the same new name that finished meanwhile is not silently replaced
    new = not os.path.lexists(dst)
    if progress is not None:
        progress("reading source", "", 0, 0)
    items = list(source.tensors())
    names = [n for n, _ in items]
    specs = {n: e for n, e in items}
    att = sum(len(d) for _, d in source.attachments())
    for w in check_source(options, names, specs, att):
        if warn is not None:
            warn(w)
    common: dict[str, Any] = {"jobs": options.jobs, "user_metadata": dict(options.metadata),
                              "created": options.created, "executor": executor,
                              "record_timings": options.record_timings, "new": new}
    if options.targeted:
        from llmc_format.pipeline.target import pack_to_target

        return pack_to_target(source, dst, options.target(), policy=options.policy(),
                              weighting=options.weighting,
                              calibration=options.calibration_text(), progress=progress,
                              **common)
    pack_source(source, dst, policy=options.policy(), progress=progress,
                resume=options.resume, **common)
    return None
