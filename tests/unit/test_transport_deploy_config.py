"""server.toml / site.toml: strict parsing, relative paths, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedmap_secure.errors import ConfigError
from fedmap_secure.transport.deploy_config import load_server_deployment, load_site_deployment
from fedmap_secure.transport.pki import generate_deployment
from fedmap_secure.transport.security import Insecure, MutualTls

CONSORTIUM = """
[consortium]
roster = "pki/roster.json"
dropout_fraction = 0.25
corrupt_fraction = 0.0
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    generate_deployment(tmp_path / "pki", ["site-a", "site-b", "site-c", "site-d"])
    return tmp_path


def _write(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.write_text(text)
    return path


def test_server_config_with_tls(root: Path) -> None:
    path = _write(
        root,
        "server.toml",
        """
[server]
listen = "0.0.0.0:6000"
state_dir = "state"
features = 13
[tls]
ca = "pki/ca.pem"
certificate = "pki/server/server.pem"
private_key = "pki/server/server.key"
[timeouts]
join = 30
stage = 5.5
"""
        + CONSORTIUM,
    )
    config = load_server_deployment(path)
    assert config.listen == "0.0.0.0:6000"
    assert config.state_dir == root / "state"
    assert isinstance(config.security, MutualTls)
    assert config.security.files.ca == root / "pki" / "ca.pem"
    assert config.settings.stage_timeout == 5.5
    assert (config.features, config.classes) == (13, 2)
    assert config.consortium.roster.sites == ("site-a", "site-b", "site-c", "site-d")
    assert config.consortium.secagg.t == 3


def test_site_config_insecure(root: Path) -> None:
    path = _write(
        root,
        "site.toml",
        """
[site]
id = "site-b"
server = "127.0.0.1:6000"
identity = "pki/sites/site-b/identity.pem"
data = "/data/b"
insecure = true
"""
        + CONSORTIUM,
    )
    config = load_site_deployment(path)
    assert config.site_id == "site-b"
    assert isinstance(config.security, Insecure)
    assert config.data == Path("/data/b")
    assert config.state_dir == root / "state"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('[site]\nid = "site-a"\n', "required"),
        (
            '[site]\nid = "x"\nserver = "s"\nidentity = "i"\ninsecure = true\n' + CONSORTIUM,
            "not on the roster",
        ),
        (
            '[site]\nid = "site-a"\nserver = "s"\nidentity = "i"\n' + CONSORTIUM,
            r"\[tls\] is required",
        ),
        (
            '[site]\nid = "site-a"\nserver = "s"\nidentity = "i"\ninsecure = "yes"\n' + CONSORTIUM,
            "site.insecure must be bool",
        ),
        (
            '[site]\nid = "site-a"\nserver = "s"\nidentity = "i"\ninsecure = true\nport = 1\n'
            + CONSORTIUM,
            "unknown keys site.port",
        ),
        ("[sight]\n" + CONSORTIUM, "unknown tables"),
        ("[site\n", "invalid TOML"),
    ],
)
def test_bad_site_configs(root: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_site_deployment(_write(root, "site.toml", text))


def test_bad_consortium(root: Path) -> None:
    text = "[server]\ninsecure = true\n" + CONSORTIUM
    with pytest.raises(ConfigError, match=r"server\.features"):
        load_server_deployment(_write(root, "server.toml", text))
    text = "[server]\ninsecure = true\nfeatures = 3\n" + CONSORTIUM.replace("0.25", "0.9")
    with pytest.raises(ConfigError):
        load_server_deployment(_write(root, "server.toml", text))
    text = "[server]\ninsecure = true\nfeatures = 3\n" + CONSORTIUM + 'graph_seed = "zz"\n'
    with pytest.raises(ConfigError, match="graph_seed"):
        load_server_deployment(_write(root, "server.toml", text))
    text = "[server]\ninsecure = true\nfeatures = 3\n[timeouts]\nstage = 0\n" + CONSORTIUM
    with pytest.raises(ConfigError, match="timeouts"):
        load_server_deployment(_write(root, "server.toml", text))


def test_the_consortium_states_max_colluding_sites(root: Path) -> None:
    """Issue 15: 0.1 of 4 sites rounds down to no collusion; the integer must be stated."""
    site = '[site]\nid = "site-b"\nserver = "s"\nidentity = "i"\ndata = "d"\ninsecure = true\n'
    fraction = CONSORTIUM.replace("corrupt_fraction = 0.0", "corrupt_fraction = 0.1")
    with pytest.raises(ConfigError, match="rounds down to 0 colluding sites"):
        load_site_deployment(_write(root, "site.toml", site + fraction))
    stated = fraction.replace("dropout_fraction = 0.25", "dropout_fraction = 0.0")
    config = load_site_deployment(
        _write(root, "site.toml", site + stated + "max_colluding_sites = 1\n")
    )
    assert (config.consortium.secagg.c_max, config.consortium.secagg.t) == (1, 3)
    with pytest.raises(ConfigError, match="max_colluding_sites must be int"):
        load_site_deployment(
            _write(root, "site.toml", site + stated + "max_colluding_sites = 1.5\n")
        )


def test_custom_model_factory_is_named_in_the_operators_own_files(root: Path) -> None:
    site = """
[site]
id = "site-b"
server = "127.0.0.1:6000"
identity = "pki/sites/site-b/identity.pem"
data = "/data/b"
insecure = true
"""
    plain = load_site_deployment(_write(root, "plain.toml", site + CONSORTIUM))
    assert plain.model is None
    named = site.replace("insecure = true", 'insecure = true\nmodel = "hospital:make_net"')
    assert load_site_deployment(_write(root, "site.toml", named + CONSORTIUM)).model == (
        "hospital:make_net"
    )
    server = '[server]\nfeatures = 13\ninsecure = true\nmodel = "hospital:make_net"\n'
    assert load_server_deployment(_write(root, "server.toml", server + CONSORTIUM)).model == (
        "hospital:make_net"
    )


def _schema_file(root: Path, names: tuple[str, ...] = ("age", "bp", "chol")) -> Path:
    from fedmap_secure.data.schema import FeatureSchema, FeatureSpec
    from fedmap_secure.data.schema_file import schema_toml_text

    schema = FeatureSchema(
        features=tuple(
            FeatureSpec(name=n, low=0.0, high=10.0, centre=5.0, scale=2.0) for n in names
        ),
        classes=("no", "yes", "maybe"),
    )
    path = root / "schema.toml"
    path.write_text(schema_toml_text(schema))
    return path


SERVER_WITH_SCHEMA = (
    """
[server]
state_dir = "state"
insecure = true
schema = "schema.toml"
{extra}
"""
    + CONSORTIUM
)


def test_server_schema_gives_the_model_shape(root: Path) -> None:
    _schema_file(root)
    path = _write(root, "server.toml", SERVER_WITH_SCHEMA.format(extra=""))
    config = load_server_deployment(path)
    assert config.schema is not None
    assert config.schema.names == ("age", "bp", "chol")
    assert (config.features, config.classes) == (3, 3)
    path.write_text(SERVER_WITH_SCHEMA.format(extra="features = 13"))
    with pytest.raises(ConfigError, match=r"server\.features = 13 but server\.schema declares 3"):
        load_server_deployment(path)


def test_server_refuses_a_run_config_whose_features_differ_from_its_schema(root: Path) -> None:
    from fedmap_secure.transport.processes import run_server

    _schema_file(root)
    (root / "run.toml").write_text('[features]\nnames = ["age", "chol", "bp"]\n')
    path = _write(root, "server.toml", SERVER_WITH_SCHEMA.format(extra='run_config = "run.toml"'))
    with pytest.raises(ConfigError, match=r"server\.schema: features .* differ") as refused:
        run_server(path, insecure=True)
    assert "\n" not in str(refused.value)
    (root / "run.toml").write_text(f'[features]\nschema_digest = "{"0" * 64}"\n')
    with pytest.raises(ConfigError, match="digest") as refused:
        run_server(path, insecure=True)
    assert "\n" not in str(refused.value)
