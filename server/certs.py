"""Every credential a clafed deployment needs, generated with `cryptography`.

    OUT/
      ca.crt, ca.key               the deployment's own CA (keep ca.key offline, with the coordinator)
      superlink.crt, superlink.key the SuperLink's TLS certificate (SANs = the hosts given) and key
      model_signing.key, .pub      the coordinator's Ed25519 key pair: sites refuse unsigned models
      SITE/supernode.key, .pub     one ECDSA P-384 key pair per site (OpenSSH format) for Flower's
                                   SuperNode authentication
      supernodes.txt               "SITE PUBLIC_KEY_PATH" per line: what `flwr supernode register`
                                   needs (flwr 1.41 registers keys one by one, no CSV file)

A site receives ca.crt, model_signing.pub and its own SITE/ folder, nothing else.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SERVER_CERT = "superlink.crt"
SERVER_KEY = "superlink.key"
SIGNING_KEY = "model_signing.key"
SIGNING_PUBLIC_KEY = "model_signing.pub"
SITE_KEY = "supernode.key"
SITE_PUBLIC_KEY = "supernode.pub"
REGISTRY = "supernodes.txt"

# Long enough for a multi-year study; rotate by generating a new folder.
VALIDITY_DAYS = 825
_SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Credentials:
    """Paths of everything `generate_credentials` wrote."""

    out: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    signing_key: Path
    signing_public_key: Path
    site_keys: dict[str, tuple[Path, Path]]  # site -> (private, public)
    registry: Path


def planned_paths(out: Path, sites: list[str]) -> Credentials:
    """Where `generate_credentials` writes, without writing anything."""
    return Credentials(
        out=out, ca_cert=out / CA_CERT, ca_key=out / CA_KEY,
        server_cert=out / SERVER_CERT, server_key=out / SERVER_KEY,
        signing_key=out / SIGNING_KEY, signing_public_key=out / SIGNING_PUBLIC_KEY,
        site_keys={s: (out / s / SITE_KEY, out / s / SITE_PUBLIC_KEY) for s in sites},
        registry=out / REGISTRY,
    )


def _all_paths(creds: Credentials) -> list[Path]:
    paths = [creds.ca_cert, creds.ca_key, creds.server_cert, creds.server_key,
             creds.signing_key, creds.signing_public_key, creds.registry]
    for private, public in creds.site_keys.values():
        paths += [private, public]
    return paths


def generate_credentials(out: str | Path, hosts: list[str], sites: list[str]) -> Credentials:
    """Write a CA, the SuperLink's TLS pair, per-site SuperNode keys and the model-signing pair.

    Refuses (FileExistsError) when any target exists: replacing keys silently would lock every
    registered site out, so the operator must choose another folder or delete the old one.
    """
    out = Path(out)
    if not hosts:
        raise ValueError("give at least one --server-host: the name or IP sites use to reach the SuperLink")
    if not sites:
        raise ValueError("give at least one site name (--sites hospital1,hospital2,...)")
    bad = [s for s in sites if not _SITE_NAME.match(s)]
    if bad or len(set(sites)) != len(sites):
        raise ValueError(f"site names must be unique and use letters, digits, '_', '.', '-': {sites}")
    creds = planned_paths(out, sites)
    existing = [p for p in _all_paths(creds) if p.exists()]
    if existing:
        raise FileExistsError(
            f"{out}: credentials already exist ({', '.join(str(p) for p in existing[:3])}"
            f"{', ...' if len(existing) > 3 else ''}); refusing to overwrite them because registered "
            "sites would be locked out. Use a new --out folder, or delete the old one on purpose.")

    out.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_cert = _ca_certificate(ca_key)
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = _server_certificate(server_key, ca_key, ca_cert, hosts)
    _write_private(creds.ca_key, _pem_private(ca_key))
    _write_public(creds.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(creds.server_key, _pem_private(server_key))
    _write_public(creds.server_cert, server_cert.public_bytes(serialization.Encoding.PEM))

    signing = ed25519.Ed25519PrivateKey.generate()
    _write_private(creds.signing_key, _pem_private(signing))
    _write_public(creds.signing_public_key, signing.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

    lines = []
    for site, (private_path, public_path) in creds.site_keys.items():
        # flwr 1.41 SuperNode auth takes NIST EC keys in OpenSSH format (it refuses Ed25519).
        key = ec.generate_private_key(ec.SECP384R1())
        private_path.parent.mkdir(parents=True, exist_ok=True)
        _write_private(private_path, key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()))
        _write_public(public_path, key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + f" {site}\n".encode())
        lines.append(f"{site} {public_path.resolve()}")
    _write_public(creds.registry, ("\n".join(lines) + "\n").encode())
    return creds


def _pem_private(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write_private(path: Path, data: bytes) -> None:
    """Create the file 0600 from the start (no window where others could read it), never overwrite."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _write_public(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _validity() -> tuple[dt.datetime, dt.datetime]:
    # Back-dated a little: a site clock a few minutes behind must not reject a fresh certificate.
    now = dt.datetime.now(dt.timezone.utc)
    return now - dt.timedelta(hours=1), now + dt.timedelta(days=VALIDITY_DAYS)


def _ca_certificate(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "clafed"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "clafed deployment CA")])
    start, end = _validity()
    return (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA384()))


def subject_alt_names(hosts: list[str]) -> list[x509.GeneralName]:
    """IP addresses become IP SANs (TLS clients match IPs only against those), the rest DNS names."""
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _server_certificate(key, ca_key, ca_cert: x509.Certificate, hosts: list[str]) -> x509.Certificate:
    start, end = _validity()
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "clafed"),
                         x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    return (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(subject_alt_names(hosts)), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA384()))


def read_registry(path: str | Path) -> list[tuple[str, Path]]:
    """The (site, public key path) pairs of a supernodes.txt."""
    pairs = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            site, key = line.split(maxsplit=1)
            pairs.append((site, Path(key)))
    return pairs
