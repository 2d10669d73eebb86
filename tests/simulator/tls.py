"""A throw-away PKI for serving the simulator (or any test server) over HTTPS: a test CA and a
server certificate for 127.0.0.1 / localhost signed by it, made at test time with
`cryptography`. Point the upstream's BACKEND_CA_FILE at `ca` to trust it.

    pki = write_pki(tmp_path / "pki")          # ca.pem, server.pem, server-key.pem
    proc, url = start_tls_simulator(log_dir, pki)
"""
from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pki:
    ca: Path        # the CA certificate (PEM): what a client trusts
    cert: Path      # the server certificate (PEM)
    key: Path       # the server's private key (PEM)

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gateway tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def write_pki(directory: Path, *, hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
              ca_name: str = "gateway test CA") -> Pki:
    """A new CA and a server certificate for `hosts` (IP addresses or DNS names)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=2)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (x509.CertificateBuilder()
               .subject_name(_name(ca_name)).issuer_name(_name(ca_name))
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                            crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
               .sign(ca_key, hashes.SHA256()))

    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (x509.CertificateBuilder()
            .subject_name(_name(hosts[0])).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))

    pki = Pki(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem")
    pki.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    pki.key.chmod(0o600)
    return pki


def load_pki(directory: Path) -> Pki:
    """The PKI in `directory`, made there first if it is not."""
    pki = Pki(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem")
    if pki.ca.exists() and pki.cert.exists() and pki.key.exists():
        return pki
    return write_pki(directory)


def start_tls_simulator(log_dir: Path, pki: Pki, *args: str):
    """The simulator serving HTTPS with `pki`'s server certificate; returns (Proc, https base URL)."""
    import httpx

    from tests import harness

    port = harness.free_port()
    proc = harness.spawn("simulator-tls", [harness.PY, "-m", "tests.simulator", "--host", harness.LOOPBACK,
                                           "--port", str(port), "--tls-dir", str(pki.ca.parent), *args],
                         port, log_dir)
    url = f"https://{harness.LOOPBACK}:{port}"
    ctx = pki.client_context()
    harness.wait_until(lambda: httpx.get(f"{url}/_sim/health", timeout=1.0, trust_env=False,
                                         verify=ctx).status_code == 200, proc)
    proc.extra["url"] = url
    return proc, url
