"""Deployment configuration of the server and site processes (``server.toml``, ``site.toml``).

Strict TOML: unknown tables or keys and values of the wrong type raise
``ConfigError`` naming ``file: table.key``. Relative paths are relative to the
configuration file. Both files share the ``[consortium]`` table (roster and
threat model), which every party must set identically: the SecAgg setup id
binds it, so a mismatch is refused at the first round. See DEPLOYMENT.md.

server.toml::

    [server]
    listen = "0.0.0.0:50051"        # address:port to listen on
    state_dir = "server-state"      # SQLite state, resumed on restart
    run_config = "experiment.toml"  # optional FedMAP run configuration (simulate's format)
    schema = "schema.toml"          # the consortium's feature schema (names, order, public
                                    #   constants, classes): binds the run's [features]
                                    #   contract (every site checks it) and goes into the
                                    #   global model file (state_dir/models/global.json)
    features = 13                   # without schema: model input size and number of classes
    classes = 2                     #   the consortium agreed on (with schema: from it)
    insecure = false                # true: plaintext gRPC, local experiments only (loopback)
    exclude_rounds = 3              # optional: a site blamed for an abort is refused for
                                    #   this many rounds (omitted: for the rest of the run)
    revoked = ["3f2a..."]           # optional: revoked site certificates, serial numbers or
                                    #   SHA-256 fingerprints (hex), refused on every call
    [tls]                           # required unless insecure
    ca = "pki/ca.pem"
    certificate = "pki/server/server.pem"
    private_key = "pki/server/server.key"
    [consortium]
    roster = "pki/roster.json"
    dropout_fraction = 0.1
    corrupt_fraction = 0.1
    max_colluding_sites = 1         # optional: c_max as an integer (needed if 0.1 n < 1)
    bits = 64                       # optional
    late_sites = ["site-x"]         # optional: the late roster, sites (fine-tune, unseen
                                    #   tiers) that may fetch the final state after training
    [timeouts]                      # optional, seconds
    join = 600.0                    # first stage: covers the sites' local training
    stage = 60.0                    # every later SecAgg stage
    join_grace = 5.0                # once t sites joined, wait this long for the others
    late = 600.0                    # after training, how long to serve the late sites

site.toml::

    [site]
    id = "site-a"
    server = "fedmap.example.org:50051"
    identity = "pki/sites/site-a/identity.pem"   # not needed by a late site
    tier = "train"                  # or "finetune" / "unseen": a late site (on the
                                    #   consortium's late_sites) that fetches the final
                                    #   state after training, fine-tunes under its own
                                    #   [privacy] (charged to its ledger) or evaluates
    state_dir = "state"             # privacy ledger and personalised model
    data = "data"                   # the site's CSV folder (<id>_train.csv, <id>_test.csv)
    label_column = "label"
    # dataset = "heart"             # instead of data: a bundled dataset spec (simulations)
    # dataset_seed = 0              #   and its seed
    # site_records = "records"      # where the site's SecAgg records go (default state_dir)
    insecure = false
    [tls]
    ca = "pki/ca.pem"
    certificate = "pki/sites/site-a/site.pem"
    private_key = "pki/sites/site-a/site.key"
    [consortium]                    # same as the server's
    ...
    [privacy]                       # the site's OWN policy (the run config's [privacy] keys);
    epsilon = 4.0                   #   DP is on when this table is absent; the site refuses a
    delta = 1e-5                    #   run announcing less protection (DP off, larger epsilon
                                    #   or delta, seeded noise); enabled = false here allows
                                    #   non-private runs, recorded as such in the site's ledger
    [client_dp]                     # only if the run config enables client-level DP:
    rounds = 10                     #   the run's rounds, and every key of the run config's
    epsilon = 8.0                   #   [client_dp] the site does not leave at its default
    delta = 1e-3                    #   (the site plans its own noise from these, never
                                    #   from the server's announcement; see client_dp_pin)

The server's client-level DP settings are the run configuration's
``[client_dp]``; its ledger is ``<state_dir>/client-dp`` (resumed on restart).
A site whose ``[client_dp]`` differs (or is absent when the run enables it)
derives another setup id and refuses every round.
"""

from __future__ import annotations

import json
import logging
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fedmap_secure.config.loader import update_dataclass
from fedmap_secure.config.privacy import PrivacyConfig
from fedmap_secure.data.schema import FeatureSchema
from fedmap_secure.data.schema_file import read_schema_file
from fedmap_secure.data.types import Tier
from fedmap_secure.errors import ConfigError
from fedmap_secure.secagg.config import Roster, SecAggConfig, check_site_id
from fedmap_secure.transport.client_dp_pin import PinnedClientDp
from fedmap_secure.transport.pki import TlsFiles, load_roster
from fedmap_secure.transport.security import Insecure, MutualTls
from fedmap_secure.transport.server import ServerSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ConsortiumConfig:
    roster: Roster
    secagg: SecAggConfig
    late_sites: frozenset[str] = frozenset()
    """The late roster: sites (fine-tune, unseen tiers) that may fetch the final state."""


@dataclass(frozen=True, kw_only=True)
class ServerDeployment:
    listen: str
    state_dir: Path
    run_config: Path | None
    features: int
    classes: int
    security: MutualTls | Insecure
    consortium: ConsortiumConfig
    settings: ServerSettings
    model: str | None = None
    """``module:function`` of the run's custom model, allowed in the server process (it
    builds the initial global model)."""
    schema: FeatureSchema | None = None
    """The consortium's feature schema (``server.schema``); None: no global model file."""


@dataclass(frozen=True, kw_only=True)
class SiteDeployment:
    site_id: str
    server: str
    identity: Path | None
    state_dir: Path
    data: Path | None
    label_column: str
    security: MutualTls | Insecure
    consortium: ConsortiumConfig
    client_dp: PinnedClientDp | None = None
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    dataset: str | None = None
    dataset_seed: int = 0
    site_records: Path | None = None
    model: str | None = None
    """``module:function`` of the custom model this site agrees to build (``[model] kind =
    "custom"`` runs); a site never imports a factory only because the server names it."""
    tier: Tier = Tier.TRAIN
    """``train``: a roster site of the secure rounds; ``finetune`` / ``unseen``: a late
    site (on the consortium's ``late_sites``) that fetches the final state after training."""


class _Table:
    """One TOML table with typed, strict access; ``done()`` refuses leftover keys."""

    def __init__(self, source: Path, name: str, content: object) -> None:
        if not isinstance(content, dict):
            raise ConfigError(f"{source}: [{name}] must be a table")
        self.source, self.name, self.rest = source, name, dict(content)

    def _take(self, key: str, kinds: tuple[type, ...], default: object) -> Any:
        if key not in self.rest:
            if default is _REQUIRED:
                raise ConfigError(f"{self.source}: {self.name}.{key} is required")
            return default
        value = self.rest.pop(key)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise ConfigError(f"{self.source}: {self.name}.{key} must be {names}")
        return value

    def string(self, key: str, default: str | None = None) -> str:
        """A string; required when ``default`` is None."""
        value: str = self._take(key, (str,), _REQUIRED if default is None else default)
        return value

    def optional_string(self, key: str) -> str | None:
        value: str | None = self._take(key, (str,), None)
        return value

    def number(self, key: str, default: float | None = None) -> float:
        value = self._take(key, (int, float), _REQUIRED if default is None else default)
        return float(value)

    def integer(self, key: str, default: int) -> int:
        value: int = self._take(key, (int,), default)
        return value

    def optional_integer(self, key: str) -> int | None:
        value: int | None = self._take(key, (int,), None)
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        """A list of strings (empty when absent)."""
        value = self._take(key, (list,), [])
        if not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{self.source}: {self.name}.{key} must be a list of strings")
        return tuple(value)

    def flag(self, key: str) -> bool:
        value: bool = self._take(key, (bool,), False)
        return value

    def path(self, key: str) -> Path:
        return _resolve(self.source, self.string(key))

    def optional_path(self, key: str) -> Path | None:
        value = self.optional_string(key)
        return None if value is None else _resolve(self.source, value)

    def done(self) -> None:
        if self.rest:
            keys = ", ".join(f"{self.name}.{k}" for k in sorted(self.rest))
            raise ConfigError(f"{self.source}: unknown keys {keys}")


_REQUIRED = object()


def _resolve(source: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else source.parent / path


def _read(path: Path, allowed: set[str]) -> dict[str, Any]:
    try:
        document = tomllib.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    unknown = sorted(set(document) - allowed)
    if unknown:
        raise ConfigError(f"{path}: unknown tables {unknown}")
    return document


def _security(source: Path, insecure: bool, document: Mapping[str, Any]) -> MutualTls | Insecure:
    if insecure:
        if "tls" in document:
            raise ConfigError(f"{source}: [tls] given but insecure = true; choose one")
        return Insecure()
    if "tls" not in document:
        raise ConfigError(f"{source}: [tls] is required (or insecure = true for local runs)")
    tls = _Table(source, "tls", document["tls"])
    files = TlsFiles(
        ca=tls.path("ca"), certificate=tls.path("certificate"), private_key=tls.path("private_key")
    )
    tls.done()
    return MutualTls(files=files)


def _consortium(source: Path, content: object) -> ConsortiumConfig:
    table = _Table(source, "consortium", content)
    roster = load_roster(table.path("roster"))
    late_sites = table.strings("late_sites")
    for late in late_sites:
        check_site_id(late)
    on_roster = sorted(set(late_sites) & set(roster.sites))
    if on_roster:
        raise ConfigError(f"{source}: consortium.late_sites {on_roster} are on the roster")
    seed_hex = table.optional_string("graph_seed")
    try:
        secagg = SecAggConfig.for_threat_model(
            n=len(roster.sites),
            dropout_fraction=table.number("dropout_fraction"),
            corrupt_fraction=table.number("corrupt_fraction"),
            bits=table.integer("bits", 64),
            max_colluding_sites=table.optional_integer("max_colluding_sites"),
        )
        if seed_hex is not None:
            secagg = replace(secagg, graph_seed=bytes.fromhex(seed_hex))
    except ValueError:
        raise ConfigError(f"{source}: consortium.graph_seed must be 64 hex digits") from None
    table.done()
    log.info("%s: secure aggregation %s", source, secagg.summary())
    return ConsortiumConfig(roster=roster, secagg=secagg, late_sites=frozenset(late_sites))


def _client_dp(source: Path, content: object) -> PinnedClientDp | None:
    if content is None:
        return None
    if not isinstance(content, dict):
        raise ConfigError(f"{source}: [client_dp] must be a table")
    return PinnedClientDp.from_table(content, str(source))


def load_server_deployment(path: Path) -> ServerDeployment:
    document = _read(path, {"server", "tls", "consortium", "timeouts"})
    server = _Table(path, "server", document.get("server", {}))
    listen = server.string("listen", "127.0.0.1:50051")
    state_dir = _resolve(path, server.string("state_dir", "server-state"))
    run_config = server.optional_path("run_config")
    schema_path = server.optional_path("schema")
    schema = None if schema_path is None else read_schema_file(schema_path)
    features, classes = _model_shape(path, server, schema)
    security = _security(path, server.flag("insecure"), document)
    exclude_rounds = server.integer("exclude_rounds", 0) or None
    revoked = server.strings("revoked")
    model = server.optional_string("model")
    server.done()
    timeouts = _Table(path, "timeouts", document.get("timeouts", {}))
    try:
        settings = ServerSettings(
            join_timeout=timeouts.number("join", 600.0),
            stage_timeout=timeouts.number("stage", 60.0),
            join_grace=timeouts.number("join_grace", 5.0),
            late_timeout=timeouts.number("late", 600.0),
            exclude_rounds=exclude_rounds,
            revoked=frozenset(revoked),
        )
    except ValueError as exc:
        raise ConfigError(f"{path}: timeouts: {exc}") from None
    timeouts.done()
    if "consortium" not in document:
        raise ConfigError(f"{path}: [consortium] is required")
    return ServerDeployment(
        listen=listen,
        state_dir=state_dir,
        run_config=run_config,
        features=features,
        classes=classes,
        security=security,
        consortium=_consortium(path, document["consortium"]),
        settings=settings,
        model=model,
        schema=schema,
    )


def _model_shape(path: Path, server: _Table, schema: FeatureSchema | None) -> tuple[int, int]:
    """(features, classes): from ``server.schema`` when given (the keys, if also set, must
    agree with it), else the ``features`` and ``classes`` keys."""
    given = {key: key in server.rest for key in ("features", "classes")}
    features, classes = server.integer("features", 0), server.integer("classes", 2)
    if schema is not None:
        for key, value, expected in (
            ("features", features, len(schema)),
            ("classes", classes, schema.n_classes),
        ):
            if given[key] and value != expected:
                raise ConfigError(
                    f"{path}: server.{key} = {value} but server.schema declares {expected}"
                )
        return len(schema), schema.n_classes
    if features < 1 or classes < 2:
        raise ConfigError(f"{path}: server.features must be >= 1 and server.classes >= 2")
    return features, classes


def _privacy(source: Path, content: object) -> PrivacyConfig:
    """The site's own ``[privacy]`` policy (absent: the defaults, DP on)."""
    if content is None:
        return PrivacyConfig()
    if not isinstance(content, dict):
        raise ConfigError(f"{source}: [privacy] must be a table")
    if "site" in content:
        raise ConfigError(f"{source}: privacy.site is a run-config key; a site sets its own budget")
    return update_dataclass(PrivacyConfig(), content, "privacy", str(source))


def load_site_deployment(path: Path) -> SiteDeployment:
    document = _read(path, {"site", "tls", "consortium", "client_dp", "privacy"})
    if "site" not in document or "consortium" not in document:
        raise ConfigError(f"{path}: [site] and [consortium] are required")
    site = _Table(path, "site", document["site"])
    site_id = site.string("id")
    check_site_id(site_id)
    tier_name = site.string("tier", Tier.TRAIN.value)
    try:
        tier = Tier(tier_name)
    except ValueError:
        tiers = [t.value for t in Tier]
        raise ConfigError(f"{path}: site.tier must be one of {tiers}, not {tier_name!r}") from None
    identity = site.optional_path("identity")
    if identity is None and tier is Tier.TRAIN:
        raise ConfigError(f"{path}: site.identity is required (a training site's signing key)")
    deployment = SiteDeployment(
        site_id=site_id,
        server=site.string("server"),
        identity=identity,
        tier=tier,
        state_dir=_resolve(path, site.string("state_dir", "state")),
        data=site.optional_path("data"),
        label_column=site.string("label_column", "label"),
        security=_security(path, site.flag("insecure"), document),
        consortium=_consortium(path, document["consortium"]),
        client_dp=_client_dp(path, document.get("client_dp")),
        privacy=_privacy(path, document.get("privacy")),
        dataset=site.optional_string("dataset"),
        dataset_seed=site.integer("dataset_seed", 0),
        site_records=site.optional_path("site_records"),
        model=site.optional_string("model"),
    )
    site.done()
    if deployment.data is not None and deployment.dataset is not None:
        raise ConfigError(f"{path}: set site.data (CSV folder) or site.dataset, not both")
    if tier is Tier.TRAIN and site_id not in deployment.consortium.roster:
        raise ConfigError(f"{path}: site {site_id!r} is not on the roster")
    if tier is not Tier.TRAIN:
        if site_id not in deployment.consortium.late_sites:
            raise ConfigError(
                f"{path}: a {tier.value} site must be on consortium.late_sites ({site_id!r} is not)"
            )
        if deployment.client_dp is not None:
            raise ConfigError(
                f"{path}: [client_dp] is for training sites; a late site sends no vector"
            )
    return deployment


def toml_text(tables: Mapping[str, Mapping[str, Any]]) -> str:
    """A deployment file from flat tables of str/bool/int/float values and lists of strings
    (None values omitted).

    For files this package writes itself (``simulate --transport grpc``'s site.toml).
    """
    lines: list[str] = []
    for name, table in tables.items():
        lines.append(f"[{name}]")
        for key, value in table.items():
            if value is None:
                continue
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, int | float):
                text = repr(value)
            elif isinstance(value, str | Path):
                text = json.dumps(str(value))
            elif isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
                text = json.dumps([str(v) for v in value])
            else:
                raise ConfigError(f"[{name}] {key}: cannot write {type(value).__name__} to TOML")
            lines.append(f"{key} = {text}")
        lines.append("")
    return "\n".join(lines)
