"""Test helpers for AI Studio / Vertex AI members: service-account key files and pool files."""
from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def new_rsa_key() -> tuple[str, str]:
    """(private key PEM, public key PEM) of a fresh 2048-bit RSA key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


def write_service_account(path: Path, email: str, project: str, token_uri: str) -> str:
    """A service-account JSON key file (Google's format); returns the public key PEM."""
    private, public = new_rsa_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "type": "service_account", "project_id": project, "private_key_id": f"kid-{abs(hash(private)) % 10**8}",
        "private_key": private, "client_email": email, "client_id": "1234567890",
        "token_uri": token_uri,
    }, indent=2))
    path.chmod(0o600)
    return public
