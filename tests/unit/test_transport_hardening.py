"""Sans-network pieces of the hardened transport: exclusion policy, abort journal, site round
floor, the skipped round, loopback-only plaintext, server.toml keys, secret-free reprs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedmap_secure.errors import AbortedError, ConfigError
from fedmap_secure.secagg.config import SecAggConfig
from fedmap_secure.secagg.messages import RevealedShare
from fedmap_secure.transport.channels import open_channel
from fedmap_secure.transport.exclusion import AbortJournal, ExclusionPolicy
from fedmap_secure.transport.round_floor import RoundFloor
from fedmap_secure.transport.security import Insecure, is_loopback, require_loopback
from fedmap_secure.transport.server import ServerSettings, message_limits


def test_culprits_are_refused_for_the_configured_rounds_and_indices_are_never_reused() -> None:
    policy = ExclusionPolicy(exclude_rounds=2)
    policy.used(4)
    policy.record_abort(round_index=4, setup_id=b"\x01" * 32, culprits=["va"], detail="bad")
    assert policy.fresh_index(4) == 5
    assert policy.fresh_index(9) == 9
    assert "aborted round 4" in (policy.refusal("va", 5) or "")
    assert policy.refusal("va", 6) is not None
    assert policy.refusal("va", 7) is None
    assert policy.refusal("vb", 5) is None
    forever = ExclusionPolicy()
    forever.record_abort(round_index=0, setup_id=b"", culprits=["va"], detail="bad")
    assert "rest of the run" in (forever.refusal("va", 10_000) or "")


def test_the_abort_journal_survives_a_restart(tmp_path: Path) -> None:
    journal = AbortJournal(tmp_path / "aborted.jsonl")
    policy = ExclusionPolicy(journal=journal)
    policy.record_abort(round_index=3, setup_id=b"\x02" * 32, culprits=["b", "a"], detail="x")
    restarted = ExclusionPolicy(journal=AbortJournal(tmp_path / "aborted.jsonl"))
    assert restarted.fresh_index(0) == 4
    assert restarted.aborted[0].culprits == ("a", "b")
    assert restarted.refusal("a", 4) is not None
    (tmp_path / "aborted.jsonl").write_text("{not json\n")
    with pytest.raises(ConfigError, match="line 1"):
        ExclusionPolicy(journal=AbortJournal(tmp_path / "aborted.jsonl"))


def test_the_round_floor_is_durable_and_only_moves_up(tmp_path: Path) -> None:
    floor = RoundFloor(tmp_path)
    assert floor.allows(0)
    floor.advance(3)
    assert not floor.allows(3)
    assert not floor.allows(1)
    assert floor.allows(4)
    with pytest.raises(ConfigError, match="already played"):
        floor.advance(3)
    assert RoundFloor(tmp_path).highest == 3
    (tmp_path / RoundFloor.FILE).write_text("garbage")
    with pytest.raises(ConfigError, match="corrupt"):
        RoundFloor(tmp_path)


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1:50051", True),
        ("localhost:1", True),
        ("[::1]:50051", True),
        ("0.0.0.0:50051", False),
        ("10.1.2.3:50051", False),
        ("fedmap.example.org:443", False),
        ("[::]:50051", False),
    ],
)
def test_plaintext_is_confined_to_loopback(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback
    if loopback:
        require_loopback(address, Insecure())
    else:
        with pytest.raises(ConfigError, match="loopback only"):
            require_loopback(address, Insecure())
        with pytest.raises(ConfigError, match="loopback only"):
            open_channel(address, Insecure())


def test_message_limits_follow_the_layout_not_a_global_constant() -> None:
    config = SecAggConfig.for_threat_model(n=10, dropout_fraction=0.1, corrupt_fraction=0.0)
    masked, small = message_limits(config, encoded_length=10_001)
    assert 8 * 10_001 < masked < 8 * 10_001 + 8192
    assert small < 64 << 10
    assert ServerSettings().max_message_bytes >= masked  # the global cap only caps


def test_revealed_shares_hide_their_value_in_reprs() -> None:
    share = RevealedShare(owner="site-a", index=2, value=b"\xab" * 98)
    assert "site-a" in repr(share)
    assert "ab" * 4 not in repr(share)
    assert "\\xab" not in repr(share)


def test_server_toml_reads_grace_exclusion_and_revocation(tmp_path: Path) -> None:
    from fedmap_secure.transport.deploy_config import load_server_deployment
    from fedmap_secure.transport.pki import generate_deployment

    generate_deployment(tmp_path / "pki", ["site-a", "site-b", "site-c"])
    path = tmp_path / "server.toml"
    path.write_text(
        '[server]\nlisten = "127.0.0.1:0"\nfeatures = 3\nexclude_rounds = 2\n'
        'revoked = ["0A:BC", "ff00"]\n'
        '[tls]\nca = "pki/ca.pem"\ncertificate = "pki/server/server.pem"\n'
        'private_key = "pki/server/server.key"\n'
        '[consortium]\nroster = "pki/roster.json"\ndropout_fraction = 0.3\n'
        "corrupt_fraction = 0.0\n[timeouts]\njoin = 60\njoin_grace = 2.5\n"
    )
    settings = load_server_deployment(path).settings
    assert (settings.join_grace, settings.exclude_rounds) == (2.5, 2)
    assert settings.revoked == frozenset({"abc", "ff00"})


class _AbortingServer:
    """Stands in for ``AggregationServer``: every round aborts (a site broke it), as counted."""

    def __init__(self) -> None:
        self.rounds: list[int] = []
        self.published = 0
        self.late_sites: frozenset[str] = frozenset()  # no late roster: nothing to wait for

    def run_round(self, *, round_index: int, **_: object) -> None:
        self.rounds.append(round_index)
        raise AbortedError(f"cannot rebuild the self-mask secret of 'va' in {round_index}")

    def publish(self, message: object, *, timeout: float) -> frozenset[str]:
        self.published += 1
        return frozenset()


def test_the_fedmap_server_loop_survives_aborted_rounds(tmp_path: Path) -> None:
    """Every round aborts: the runtime keeps the model, uses each index once (stored, so a
    restart does not reuse it either) and publishes the end."""
    import dataclasses

    from fedmap_secure.config.loader import load_config
    from fedmap_secure.runtime.announcement import config_json
    from fedmap_secure.runtime.server import ServerRuntime
    from fedmap_secure.transport.server_channel import GrpcServerChannel
    from fedmap_secure.transport.state_store import ServerStateStore

    config = dataclasses.replace(load_config(None), rounds=3)
    store = ServerStateStore(tmp_path / "state.sqlite3", run_config_json=config_json(config))
    server = _AbortingServer()
    channel = GrpcServerChannel(server, final_timeout=0.1)  # type: ignore[arg-type]
    runtime = ServerRuntime(config=config, n_features=4, n_classes=2, channel=channel, store=store)
    initial = runtime.state.gamma.copy()
    final = runtime.run()
    assert server.rounds == [0, 1, 2]
    assert server.published == 1
    assert final.round_index == 3
    np.testing.assert_array_equal(final.gamma, initial)
    stored = store.latest()
    assert stored is not None
    assert stored.next_round == 3
    assert stored.metrics["contributors"] == 0
