"""RSA keys for encrypted test volumes, made as the prod stack makes them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from components.juicefs.commands import SecretEnv
from components.juicefs.encryption_key import ENCRYPT_KEY_COMMAND


def plain_pem() -> str:
    """An RSA-2048 key as pulumi-tls's private_key_pem gives it (PKCS#1, unencrypted)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()


def protect(pem: str, passphrase: str) -> str:
    """The program's command, run as pulumi-command runs it: `sh -c`, key on stdin, passphrase in env."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("needs openssl (apt-get install openssl)", pytrace=False)
    result = subprocess.run(
        ["/bin/sh", "-c", ENCRYPT_KEY_COMMAND],
        input=pem,
        env={"PATH": str(Path(openssl).parent), SecretEnv.RSA_PASSPHRASE: passphrase},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout
