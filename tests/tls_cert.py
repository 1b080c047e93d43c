"""A throwaway TLS certificate for tests that serve https or STARTTLS on loopback."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def self_signed_cert(
    directory: Path, name: str = "localhost", *, loopback_ip: bool = True
) -> tuple[Path, Path]:
    """Return a certificate and key for `name` (and 127.0.0.1), made with the openssl CLI."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed, so no TLS certificate can be made")
    cert, key = directory / f"{name}-cert.pem", directory / f"{name}-key.pem"
    names = f"DNS:{name},IP:127.0.0.1" if loopback_ip else f"DNS:{name}"
    subprocess.run(  # noqa: S603  fixed arguments, no shell
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={name}",
            "-addext",
            f"subjectAltName={names}",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key
