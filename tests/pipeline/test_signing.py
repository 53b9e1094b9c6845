"""`llmc sign` / `llmc verify --signature`: the signature covers exactly the archive's
bytes and is made and checked offline with an EC key pair (OpenSSF model-signing)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import llmc_format
from llmc_format.errors import SignatureError

pytest.importorskip("model_signing", reason="pip install 'llmc-format[sign]'")
ec = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.ec")
serialization = pytest.importorskip("cryptography.hazmat.primitives.serialization")

from llmc_format.cli import app  # noqa: E402
from llmc_format.pipeline.signing import sign_archive, verify_archive_signature  # noqa: E402


def _key_pair(d: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    priv, pub = d / f"{name}.pem", d / f"{name}.pub.pem"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    return llmc_format.save_file({"w": np.arange(64, dtype=np.float32).reshape(8, 8)},
                                 tmp_path / "m.llmc")


def test_signature_verifies_and_one_flipped_bit_fails_it(tmp_path: Path, archive: Path) -> None:
    priv, pub = _key_pair(tmp_path, "alice")
    sig = sign_archive(archive, priv)
    assert sig == tmp_path / "m.llmc.sig"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    verify_archive_signature(archive, sig, pub)
    data = bytearray(archive.read_bytes())
    for pos in (0, len(data) // 2, len(data) - 1):  # header, middle, footer magic
        flipped = tmp_path / f"flipped{pos}.llmc"
        flipped.write_bytes(bytes(data[:pos]) + bytes([data[pos] ^ 1]) + bytes(data[pos + 1:]))
        with pytest.raises(SignatureError):
            verify_archive_signature(flipped, sig, pub)
    longer = tmp_path / "longer.llmc"
    longer.write_bytes(bytes(data) + b"\0")
    with pytest.raises(SignatureError):
        verify_archive_signature(longer, sig, pub)


def test_another_key_does_not_verify(tmp_path: Path, archive: Path) -> None:
    priv, _ = _key_pair(tmp_path, "alice")
    _, mallory_pub = _key_pair(tmp_path, "mallory")
    sig = sign_archive(archive, priv, tmp_path / "custom.sig")
    with pytest.raises(SignatureError):
        verify_archive_signature(archive, sig, mallory_pub)


def test_cli_sign_and_verify(tmp_path: Path, archive: Path) -> None:
    priv, pub = _key_pair(tmp_path, "alice")
    runner = CliRunner()
    r = runner.invoke(app, ["sign", str(archive), "--key", str(priv)])
    assert r.exit_code == 0, r.output
    sig = tmp_path / "m.llmc.sig"
    r = runner.invoke(app, ["verify", str(archive), "--signature", str(sig),
                            "--public-key", str(pub)])
    assert r.exit_code == 0, r.output
    assert "signature" in r.output
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x10
    archive.write_bytes(bytes(data))
    r = runner.invoke(app, ["verify", str(archive), "--signature", str(sig),
                            "--public-key", str(pub)])
    assert r.exit_code == 1, r.output
    r = runner.invoke(app, ["verify", str(archive), "--signature", str(sig)])
    assert r.exit_code == 2, r.output


def test_the_signature_file_gets_the_umask_mode(tmp_path: Path, archive: Path) -> None:
    # the bundle is public (it travels with the archive): not left at mkstemp's 0600
    priv, _ = _key_pair(tmp_path, "alice")
    old = os.umask(0o027)
    try:
        sig = sign_archive(archive, priv)
    finally:
        os.umask(old)
    assert oct(sig.stat().st_mode & 0o777) == oct(0o640)
