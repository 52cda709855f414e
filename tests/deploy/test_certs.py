"""`clafed certs`: what each party gets, permissions, SANs, and no silent overwrite."""
from __future__ import annotations

import ipaddress
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from common.cli import main
from server.certs import generate_credentials, read_registry

SITES = ["hospital1", "hospital2", "hospital3"]


@pytest.fixture(scope="module")
def creds(tmp_path_factory):
    return generate_credentials(tmp_path_factory.mktemp("c") / "creds", ["127.0.0.1", "fl.example.org"], SITES)


def test_private_keys_are_owner_only_and_public_files_readable(creds):
    private = [creds.ca_key, creds.server_key, creds.signing_key, *(k for k, _ in creds.site_keys.values())]
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for path in [creds.ca_cert, creds.server_cert, creds.signing_public_key, creds.registry]:
        assert stat.S_IMODE(path.stat().st_mode) & 0o044, path


def test_server_certificate_is_signed_by_the_ca_with_the_hosts_as_sans(creds):
    ca = x509.load_pem_x509_certificate(creds.ca_cert.read_bytes())
    cert = x509.load_pem_x509_certificate(creds.server_cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert sans.get_values_for_type(x509.DNSName) == ["fl.example.org"]
    key = serialization.load_pem_private_key(creds.server_key.read_bytes(), None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()


def test_site_keys_are_p384_openssh_pairs_listed_for_registration(creds):
    assert [site for site, _ in read_registry(creds.registry)] == SITES
    for site, public_path in read_registry(creds.registry):
        private_path = creds.site_keys[site][0]
        private = serialization.load_ssh_private_key(private_path.read_bytes(), None)
        public = serialization.load_ssh_public_key(public_path.read_bytes())
        assert isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp384r1"
        assert private.public_key().public_numbers() == public.public_numbers()
    keys = {creds.site_keys[s][1].read_bytes() for s in SITES}
    assert len(keys) == len(SITES)


def test_signing_pair_is_ed25519(creds):
    private = serialization.load_pem_private_key(creds.signing_key.read_bytes(), None)
    public = serialization.load_pem_public_key(creds.signing_public_key.read_bytes())
    assert isinstance(private, ed25519.Ed25519PrivateKey) and isinstance(public, ed25519.Ed25519PublicKey)
    public.verify(private.sign(b"x"), b"x")


def test_rerunning_refuses_and_leaves_the_keys_alone(creds, capsys):
    before = {p: p.read_bytes() for p in creds.out.rglob("*") if p.is_file()}
    rc = main(["certs", "--out", str(creds.out), "--server-host", "127.0.0.1", "--sites", "hospital1"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "already exist" in err and "refusing to overwrite" in err and str(creds.out) in err
    assert {p: p.read_bytes() for p in creds.out.rglob("*") if p.is_file()} == before


def test_cli_writes_a_fresh_folder_and_rejects_bad_site_names(tmp_path, capsys):
    out = tmp_path / "c"
    assert main(["certs", "--out", str(out), "--server-host", "localhost", "--sites", "a,b"]) == 0
    assert (out / "a" / "supernode.key").is_file() and "send to b" in capsys.readouterr().out
    assert main(["certs", "--out", str(tmp_path / "d"), "--server-host", "x", "--sites", "a,../b"]) == 2
    assert "site names" in capsys.readouterr().err and not (tmp_path / "d").exists()
