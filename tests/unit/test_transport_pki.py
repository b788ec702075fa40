"""Key material files: identity keys (0600 PEM), roster JSON, test-deployment certificates."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedmap_secure.crypto.signing import IdentityKey
from fedmap_secure.errors import ConfigError
from fedmap_secure.secagg.config import Roster
from fedmap_secure.transport import pki


def test_identity_key_round_trip_and_mode(tmp_path: Path) -> None:
    key = IdentityKey.generate()
    path = tmp_path / "identity.pem"
    pki.write_identity(path, key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert pki.load_identity(path).public == key.public


def test_identity_key_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "identity.pem"
    pki.write_identity(path, IdentityKey.generate())
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        pki.write_identity(path, IdentityKey.generate())
    assert path.read_bytes() == before


def test_identity_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "identity.pem"
    pki.write_identity(path, IdentityKey.generate())
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        pki.load_identity(path)


def test_identity_key_wrong_content(tmp_path: Path) -> None:
    path = tmp_path / "identity.pem"
    path.write_bytes(b"not a key")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="not an unencrypted PEM"):
        pki.load_identity(path)
    with pytest.raises(ConfigError, match="cannot read identity key"):
        pki.load_identity(tmp_path / "missing.pem")


def test_roster_round_trip(tmp_path: Path) -> None:
    roster = Roster.from_mapping({s: IdentityKey.generate().public for s in ("b", "a")})
    path = tmp_path / "roster.json"
    pki.write_roster(path, roster)
    document = json.loads(path.read_text())
    assert document["version"] == 1
    assert document["sites"]["a"] == roster.public_key("a").hex()
    assert pki.load_roster(path) == roster


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{", "not valid JSON"),
        ('{"version": 2, "sites": {}}', "version 1"),
        ('{"version": 1, "sites": {}}', "non-empty"),
        ('{"version": 1, "sites": {"a": "zz"}}', "not hex"),
        ('{"version": 1, "sites": {"a": "0011"}}', "roster"),
        ('{"version": 1, "sites": {"bad id!": "' + "00" * 32 + '"}}', "roster"),
    ],
)
def test_bad_roster_files(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "roster.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=match):
        pki.load_roster(path)


def test_deployment_files(tmp_path: Path) -> None:
    deployment = pki.generate_deployment(tmp_path, ["site-b", "site-a"])
    roster = pki.load_roster(deployment.roster)
    assert roster.sites == ("site-a", "site-b")
    ca = x509.load_pem_x509_certificate(deployment.ca.read_bytes())
    for site in roster.sites:
        files = deployment.site_tls(site)
        cert = x509.load_pem_x509_certificate(files.certificate.read_bytes())
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == site
        assert cert.issuer == ca.subject
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert ExtendedKeyUsageOID.CLIENT_AUTH in usage
        cert.verify_directly_issued_by(ca)
        for secret in (files.private_key, deployment.identity(site)):
            assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        assert pki.load_identity(deployment.identity(site)).public == roster.public_key(site)
    server = x509.load_pem_x509_certificate(deployment.server_tls().certificate.read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert stat.S_IMODE((tmp_path / "ca.key").stat().st_mode) == 0o600


def test_deployment_refuses_bad_site_ids_and_existing_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid site id"):
        pki.generate_deployment(tmp_path / "x", ["ok", "not ok"])
    pki.generate_deployment(tmp_path / "y", ["a", "b"])
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        pki.generate_deployment(tmp_path / "y", ["a", "b"])


def test_missing_tls_file_is_named(tmp_path: Path) -> None:
    files = pki.TlsFiles(
        ca=tmp_path / "ca.pem", certificate=tmp_path / "c", private_key=tmp_path / "k"
    )
    with pytest.raises(ConfigError, match=r"ca\.pem"):
        files.read()


def test_create_identity(tmp_path: Path) -> None:
    key = pki.create_identity(tmp_path / "k" / "identity.pem")
    assert pki.load_identity(tmp_path / "k" / "identity.pem").public == key.public


def test_keygen_functions(tmp_path: Path) -> None:
    from fedmap_secure.transport.keygen import keygen_consortium, keygen_identity

    lines = keygen_consortium(tmp_path / "c", ["site-a", "site-b"])
    assert any("roster" in line for line in lines)
    assert pki.load_roster(tmp_path / "c" / "roster.json").sites == ("site-a", "site-b")
    public = keygen_identity(tmp_path / "one.pem")
    assert pki.load_identity(tmp_path / "one.pem").public.hex() == public


def test_several_machines_each_site_keeps_its_keys_and_the_ca_signs(tmp_path: Path) -> None:
    add_to_roster, load_roster = pki.add_to_roster, pki.load_roster
    layout = pki.generate_ca(tmp_path / "pki")
    assert layout.server_tls().certificate.is_file()
    keys = {}
    for site in ("site-a", "site-b"):
        home = tmp_path / site
        keys[site] = pki.site_request(home, site)
        assert (home / "site.key").stat().st_mode & 0o077 == 0
        assert (home / "identity.pem").stat().st_mode & 0o077 == 0
        assert pki.sign_request(tmp_path / "pki", home / "site.csr", home / "site.pem") == site
        cert = x509.load_pem_x509_certificate((home / "site.pem").read_bytes())
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(layout.ca.read_bytes()))
        (name,) = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        assert name.value == site
        add_to_roster(tmp_path / "pki" / "roster.json", site, keys[site].hex())
    roster = load_roster(tmp_path / "pki" / "roster.json")
    assert dict(roster.entries) == keys
    with pytest.raises(ConfigError, match="another key"):
        add_to_roster(tmp_path / "pki" / "roster.json", "site-a", keys["site-b"].hex())


def test_a_private_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    deployment = pki.generate_deployment(tmp_path, ["site-a", "site-b"])
    files = deployment.site_tls("site-a")
    files.read()  # generated at 0600
    files.private_key.chmod(0o644)
    with pytest.raises(ConfigError, match=r"site\.key has mode 0644.*chmod 600"):
        files.read()
    files.private_key.chmod(0o640)
    with pytest.raises(ConfigError, match="group/others may read it"):
        files.read()
