"""Authenticity: sign an archive's exact bytes, and check such a signature, offline.

``verify`` proves integrity (every byte matches its XXH3-64) but not *who* made a file:
anyone can write a file with valid checksums. A signature made with a private key proves
that the holder of that key signed exactly these bytes. We use the OpenSSF
``model-signing`` package (PyPI; the extra ``sign``): it hashes the file (SHA-256) into
an in-toto statement, signs it in a DSSE envelope and writes a Sigstore bundle (JSON).
With an elliptic-curve key pair (PEM) nothing touches the network: no Fulcio
certificate, no Rekor transparency log. The archive is signed as one file, so the
signature covers its whole content and nothing else (the file's name is not part of it:
a renamed copy still verifies; one flipped bit does not).

The signature is a separate file (default ``ARCHIVE.sig``), not part of the archive: the
format has no place for it, and signing never rewrites the signed bytes.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from llmc_format.errors import LlmcError, SignatureError
from llmc_format.outfiles import umask

#: installed by ``pip install 'llmc-format[sign]'``
_INSTALL_HINT = "signing needs the 'model-signing' package: pip install 'llmc-format[sign]'"


def default_signature_path(archive: str | os.PathLike[str]) -> Path:
    """Where ``llmc sign`` puts the signature of ``archive`` unless told: ``ARCHIVE.sig``."""
    p = Path(archive)
    return p.with_name(p.name + ".sig")


def _model_signing() -> tuple[Any, Any]:
    try:
        from model_signing import signing, verifying
    except ImportError as exc:
        raise LlmcError(f"{_INSTALL_HINT} ({exc})") from None
    return signing, verifying


def _regular_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise LlmcError(f"{what} {path} is not a file")


def sign_archive(archive: str | os.PathLike[str], private_key: str | os.PathLike[str],
                 signature: str | os.PathLike[str] | None = None) -> Path:
    """Sign the exact bytes of ``archive`` with the EC private key ``private_key`` (PEM,
    unencrypted); write the Sigstore bundle to ``signature`` atomically; return its path."""
    archive, key = Path(archive), Path(private_key)
    _regular_file(archive, "archive")
    _regular_file(key, "private key")
    out = default_signature_path(archive) if signature is None else Path(signature)
    signing, _ = _model_signing()
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent or ".")
    os.close(fd)
    try:
        try:
            signing.Config().use_elliptic_key_signer(private_key=key).sign(archive, tmp)
        except (ValueError, TypeError, OSError) as exc:
            raise LlmcError(f"cannot sign {archive} with {key}: {exc}") from None
        with open(tmp, "rb") as f:
            os.fchmod(f.fileno(), 0o666 & ~umask())  # mkstemp's 0600: the bundle is public
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def verify_archive_signature(archive: str | os.PathLike[str],
                             signature: str | os.PathLike[str],
                             public_key: str | os.PathLike[str]) -> None:
    """``SignatureError`` unless ``signature`` is a valid signature of exactly the bytes of
    ``archive`` by the private key of ``public_key`` (PEM)."""
    archive, sig, key = Path(archive), Path(signature), Path(public_key)
    for path, what in ((archive, "archive"), (sig, "signature"), (key, "public key")):
        _regular_file(path, what)
    _, verifying = _model_signing()
    try:
        verifying.Config().use_elliptic_key_verifier(public_key=key).verify(archive, sig)
    except Exception as exc:  # model-signing raises ValueError and others on any mismatch
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SignatureError(f"signature {sig} does not verify {archive} with {key}: "
                             f"{first[:200]}") from None
