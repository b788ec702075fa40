"""Key material for a deployment: TLS certificates, site identity keys, the roster.

``generate_deployment`` writes everything a small consortium needs to try a
mutual-TLS deployment (a test CA; production consortia use their own PKI)::

    out/ca.pem                          CA certificate (every party pins it)
    out/ca.key                          CA private key (0600; keep offline)
    out/server/server.pem, server.key   server certificate (SAN: the given host names / IPs)
    out/sites/<id>/site.pem, site.key   client certificate of site <id> (CN = <id>)
    out/sites/<id>/identity.pem         the site's Ed25519 identity key (PKCS#8 PEM, 0600)
    out/roster.json                     {"version": 1, "sites": {"<id>": "<hex public key>"}}

TLS keys are ECDSA P-256 (what every gRPC TLS stack accepts). The site's
certificate common name is its site id: the server binds every message to the
identity of the TLS channel it arrived on. The Ed25519 identity key signs the
site's SecAgg key advertisements; the roster of identity public keys is pinned
by every site (the server cannot substitute a key). Private key files are
created with mode 0600 and never overwritten.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedmap_secure.crypto.signing import IdentityKey
from fedmap_secure.errors import ConfigError
from fedmap_secure.secagg.config import Roster, check_site_id

ROSTER_VERSION = 1
_VALIDITY = datetime.timedelta(days=365)


@dataclass(frozen=True, kw_only=True)
class TlsFiles:
    """PEM files of one party: the CA it trusts, its certificate and its private key."""

    ca: Path
    certificate: Path
    private_key: Path

    def read(self) -> tuple[bytes, bytes, bytes]:
        """(ca, certificate, private key) bytes; ``ConfigError`` names a missing file, or a
        private key that the group or other users can read (``check_private_key_mode``)."""
        out = []
        for path in (self.ca, self.certificate, self.private_key):
            try:
                out.append(path.read_bytes())
            except OSError as exc:
                raise ConfigError(f"cannot read TLS file {path}: {exc.strerror}") from None
        check_private_key_mode(self.private_key)
        return out[0], out[1], out[2]


def check_private_key_mode(path: Path) -> None:
    """Refuse a private key file readable by its group or other users (POSIX modes only)."""
    if os.name != "posix":
        return
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"cannot read TLS file {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise ConfigError(
            f"private key {path} has mode {mode & 0o777:04o}: group/others may read it; "
            f"run: chmod 600 {path}"
        )


# ----------------------------------------------------------------------------- files


def _write_secret(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 (refuse to overwrite an existing key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path} exists; refusing to overwrite a private key") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def write_identity(path: Path, key: IdentityKey) -> None:
    """Store a site identity key as PKCS#8 PEM with mode 0600."""
    private = ed25519.Ed25519PrivateKey.from_private_bytes(key.seed_bytes())
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_secret(path, pem)


def create_identity(path: Path) -> IdentityKey:
    """A fresh site identity key written to ``path`` (0600); its public key goes in the roster."""
    key = IdentityKey.generate()
    write_identity(path, key)
    return key


def load_identity(path: Path) -> IdentityKey:
    """Read a site identity key written by ``write_identity`` (refuses group/world access)."""
    try:
        mode = path.stat().st_mode & 0o077
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read identity key {path}: {exc.strerror}") from None
    if mode:
        raise ConfigError(f"identity key {path} is readable by others; chmod 600 it")
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(private, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an Ed25519 key")
    seed = private.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    return IdentityKey.from_seed(seed)


def write_roster(path: Path, roster: Roster) -> None:
    document = {
        "version": ROSTER_VERSION,
        "sites": {site: key.hex() for site, key in roster.entries},
    }
    _write_public(path, (json.dumps(document, indent=2, sort_keys=True) + "\n").encode())


def load_roster(path: Path) -> Roster:
    """Read ``roster.json``; ``ConfigError`` names the file and the bad entry."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read roster {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"roster {path} is not valid JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("version") != ROSTER_VERSION:
        raise ConfigError(f"roster {path}: expected an object with version {ROSTER_VERSION}")
    sites = document.get("sites")
    if not isinstance(sites, dict) or not sites:
        raise ConfigError(f"roster {path}: 'sites' must be a non-empty object")
    keys: dict[str, bytes] = {}
    for site, value in sites.items():
        try:
            keys[site] = bytes.fromhex(value)
        except (TypeError, ValueError):
            raise ConfigError(f"roster {path}: key of site {site!r} is not hex") from None
    try:
        return Roster.from_mapping(keys)
    except ConfigError as exc:
        raise ConfigError(f"roster {path}: {exc}") from None


# ----------------------------------------------------------------------------- certificates


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedmap-secure test deployment"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _certificate(
    *,
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    now: datetime.datetime,
    usage: x509.ObjectIdentifier | None = None,
    alt_names: Iterable[x509.GeneralName] = (),
) -> x509.Certificate:
    issuer_name, issuer_key = issuer if issuer else (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    names = list(alt_names)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _alt_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


@dataclass(frozen=True, kw_only=True)
class Deployment:
    """Paths written by ``generate_deployment``."""

    root: Path

    @property
    def ca(self) -> Path:
        return self.root / "ca.pem"

    @property
    def roster(self) -> Path:
        return self.root / "roster.json"

    def server_tls(self) -> TlsFiles:
        d = self.root / "server"
        return TlsFiles(ca=self.ca, certificate=d / "server.pem", private_key=d / "server.key")

    def site_tls(self, site: str) -> TlsFiles:
        d = self.root / "sites" / site
        return TlsFiles(ca=self.ca, certificate=d / "site.pem", private_key=d / "site.key")

    def identity(self, site: str) -> Path:
        return self.root / "sites" / site / "identity.pem"


def generate_deployment(
    out: Path,
    sites: Iterable[str],
    *,
    server_hosts: Iterable[str] = ("localhost", "127.0.0.1"),
    now: datetime.datetime | None = None,
    late_sites: Iterable[str] = (),
) -> Deployment:
    """Create a test CA, server and site certificates, identity keys and the roster.

    ``late_sites`` (fine-tune / unseen tiers) get a TLS certificate only: they are not
    on the roster and hold no identity key (they take part in no secure round).
    """
    site_ids = sorted(set(sites))
    late_ids = sorted(set(late_sites))
    for site in (*site_ids, *late_ids):
        check_site_id(site)
    if set(site_ids) & set(late_ids):
        raise ConfigError("a site is either on the roster or a late site, not both")
    when = now or datetime.datetime.now(datetime.UTC)
    layout = Deployment(root=out)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _certificate(subject="fedmap-secure test CA", key=ca_key, issuer=None, now=when)
    issuer = (ca_cert.subject, ca_key)
    _write_secret(out / "ca.key", _key_pem(ca_key))
    _write_public(layout.ca, ca_cert.public_bytes(serialization.Encoding.PEM))
    hosts = list(server_hosts)
    _issue(
        layout.server_tls(),
        subject=hosts[0],
        issuer=issuer,
        now=when,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        alt_names=[_alt_name(h) for h in hosts],
    )
    for site in (*site_ids, *late_ids):
        _issue(
            layout.site_tls(site),
            subject=site,
            issuer=issuer,
            now=when,
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
            alt_names=[x509.DNSName(site)],
        )
    keys: dict[str, bytes] = {}
    for site in site_ids:  # only roster sites hold an identity key
        identity = IdentityKey.generate()
        write_identity(layout.identity(site), identity)
        keys[site] = identity.public
    write_roster(layout.roster, Roster.from_mapping(keys))
    return layout


def _issue(
    files: TlsFiles,
    *,
    subject: str,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey],
    now: datetime.datetime,
    usage: x509.ObjectIdentifier,
    alt_names: list[x509.GeneralName],
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate(
        subject=subject, key=key, issuer=issuer, now=now, usage=usage, alt_names=alt_names
    )
    _write_secret(files.private_key, _key_pem(key))
    _write_public(files.certificate, cert.public_bytes(serialization.Encoding.PEM))


# ----------------------------------------------------------------------------- several machines


def generate_ca(
    out: Path,
    *,
    server_hosts: Iterable[str] = ("localhost", "127.0.0.1"),
    now: datetime.datetime | None = None,
) -> Deployment:
    """The coordinator's part: a CA and the server certificate, no site material."""
    when = now or datetime.datetime.now(datetime.UTC)
    layout = Deployment(root=out)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _certificate(subject="fedmap-secure test CA", key=ca_key, issuer=None, now=when)
    _write_secret(out / "ca.key", _key_pem(ca_key))
    _write_public(layout.ca, ca_cert.public_bytes(serialization.Encoding.PEM))
    hosts = list(server_hosts)
    _issue(
        layout.server_tls(),
        subject=hosts[0],
        issuer=(ca_cert.subject, ca_key),
        now=when,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        alt_names=[_alt_name(h) for h in hosts],
    )
    return layout


def site_request(out: Path, site: str) -> bytes:
    """A site's own part, on its machine: TLS key, identity key (both 0600, never sent) and a
    certificate request ``site.csr`` (CN = site id). Returns the identity public key."""
    check_site_id(site)
    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_name(site))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(site)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_secret(out / "site.key", _key_pem(key))
    identity = create_identity(out / "identity.pem")
    _write_public(out / "site.csr", request.public_bytes(serialization.Encoding.PEM))
    return identity.public


def sign_request(
    ca_dir: Path, request_path: Path, out: Path, *, now: datetime.datetime | None = None
) -> str:
    """The CA signs a site's request (signature and site id checked); returns the site id."""
    try:
        request = x509.load_pem_x509_csr(request_path.read_bytes())
        ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes())
        ca_key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the request or the CA in {ca_dir}: {exc}") from None
    if not request.is_signature_valid:
        raise ConfigError(f"{request_path}: the request's signature does not verify")
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{ca_dir / 'ca.key'} is not the CA's EC key")
    names = request.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    site = str(names[0].value) if names else ""
    check_site_id(site)
    public = request.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise ConfigError(f"{request_path}: the site key must be an EC P-256 key")
    when = now or datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(site))
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(when - datetime.timedelta(minutes=5))
        .not_valid_after(when + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(site)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_public(out, cert.public_bytes(serialization.Encoding.PEM))
    return site


def add_to_roster(path: Path, site: str, public_hex: str) -> int:
    """Add one site's identity public key to ``roster.json`` (created if absent); refuses a
    changed key. Returns the number of sites on it (a usable roster needs at least two)."""
    check_site_id(site)
    try:
        key = bytes.fromhex(public_hex)
    except ValueError:
        raise ConfigError(f"the public key of site {site!r} is not hex") from None
    if len(key) != 32:
        raise ConfigError(f"the public key of site {site!r} must be 32 bytes (64 hex digits)")
    sites: dict[str, str] = {}
    if path.exists():
        try:
            sites = dict(json.loads(path.read_text(encoding="utf-8"))["sites"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"roster {path} is unusable: {exc}") from None
    if site in sites and sites[site] != key.hex():
        raise ConfigError(f"{path}: site {site!r} is on the roster with another key")
    sites[site] = key.hex()
    document = {"version": ROSTER_VERSION, "sites": sites}
    _write_public(path, (json.dumps(document, indent=2, sort_keys=True) + "\n").encode())
    return len(sites)
