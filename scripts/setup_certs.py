"""Create what the gateway's TLS needs under a folder (``certs/``), idempotently.

* the gateway's CA (mitmproxy's confdir files); clients trust ``mitmproxy-ca-cert.pem``;
* a CA and a ``localhost``/``127.0.0.1`` certificate for the demo upstream (``make demo``);
* ``upstream-trust.pem``: the public CA bundle (certifi) plus the demo CA, which the gateway uses
  to verify upstream servers.

Usage: ``python -m scripts.setup_certs certs``
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import sys
from pathlib import Path

import certifi
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from mitmproxy.certs import CertStore

VALIDITY = datetime.timedelta(days=825)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Warden demo"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.write_bytes(data)
    if private:
        os.chmod(path, 0o600)


def demo_upstream_certs(folder: Path) -> None:
    """A throwaway CA and a server certificate for the demo upstream on localhost."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("Warden demo upstream CA")).issuer_name(_name("Warden demo upstream CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    leaf = (
        x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(folder / "demo-upstream-ca.pem", ca.public_bytes(serialization.Encoding.PEM))
    _write(folder / "demo-upstream.key", _pem_key(key), private=True)
    _write(folder / "demo-upstream.pem", leaf.public_bytes(serialization.Encoding.PEM))


def main(folder: str = "certs") -> None:
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    CertStore.from_store(str(root), "mitmproxy", 2048)  # creates the gateway CA on first run only
    if not (root / "demo-upstream.pem").exists():
        demo_upstream_certs(root)
    bundle = Path(certifi.where()).read_bytes() + b"\n" + (root / "demo-upstream-ca.pem").read_bytes()
    _write(root / "upstream-trust.pem", bundle)
    print(f"certs ready in {root}/: clients trust {root}/mitmproxy-ca-cert.pem")


if __name__ == "__main__":
    main(*sys.argv[1:2])
