"""FedMAP round state <-> the ``FedMapRound`` announcement (the only FedMAP-aware transport code).

The server announces (round, gamma, psi, run configuration) together with the
round's ``SecAggSetup``. A site rebuilds the configuration and the state from
the announcement and recomputes ``round_context`` itself; ``SiteClient``
refuses the round unless that equals the context bound into the secure session,
so a server cannot train one site against a model or configuration other than
the one every other site signed for.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from typing import Any

from fedmap_secure import PROTOCOL_VERSION
from fedmap_secure.config.loader import config_to_dict, update_dataclass
from fedmap_secure.config.schema import SimulationConfig
from fedmap_secure.errors import ConfigError, RemoteProtocolError
from fedmap_secure.fedmap.methods import GlobalState
from fedmap_secure.runtime.state import round_context
from fedmap_secure.secagg.config import SERVER_ID
from fedmap_secure.transport import messages as tm

_SOURCE = "round announcement"


def config_json(config: SimulationConfig) -> str:
    """The run configuration as canonical JSON (sorted keys, no whitespace)."""
    return json.dumps(config_to_dict(config), sort_keys=True, separators=(",", ":"))


def run_id(config: SimulationConfig) -> str:
    """The run id written into model files: SHA-256 of the announced configuration JSON (16 hex).

    Every party derives it from the same announced text, so the sites' and the
    server's files of one run carry the same id; it names the configuration, so
    a rerun of the same configuration has the same id (the round and the
    ledger's epsilon in the sidecar tell the files apart).
    """
    return hashlib.sha256(config_json(config).encode("utf-8")).hexdigest()[:16]


def config_from_json(text: str, *, peer: str = SERVER_ID) -> SimulationConfig:
    """Parse an announced configuration strictly; a bad one is the announcer's protocol error.

    The configuration is immutable: the parse of a text is kept (every site of an
    in-process run parses the same announcement every round).
    """
    return _parsed(text, peer)


@functools.lru_cache(maxsize=16)
def _parsed(text: str, peer: str) -> SimulationConfig:
    try:
        document: Any = json.loads(text)
        if not isinstance(document, dict):
            raise ConfigError("configuration must be a JSON object")
        scalars = {k: v for k, v in document.items() if not isinstance(v, dict)}
        config = update_dataclass(SimulationConfig(), scalars, "simulation", _SOURCE)
        sections: dict[str, Any] = {}
        for name, table in document.items():
            if isinstance(table, dict):
                base = getattr(config, name, None)
                if not dataclasses.is_dataclass(base):
                    raise ConfigError(f"unknown section {name!r}")
                sections[name] = update_dataclass(base, table, name, _SOURCE)
        return dataclasses.replace(config, **sections)
    except (ConfigError, ValueError, TypeError) as exc:
        raise RemoteProtocolError(peer, f"unusable run configuration: {exc}") from None


def state_of(opening: tm.FedMapRound) -> GlobalState:
    """The announced state (writable copies: the message's arrays are read-only)."""
    psi = None if opening.psi is None else opening.psi.copy()
    return GlobalState(round_index=opening.round_index, gamma=opening.gamma.copy(), psi=psi)


def announcement(
    *, config_text: str, state: GlobalState, setup: tm.SecAggSetup | None
) -> tm.FedMapRound:
    """The round's opening message; ``setup`` None makes it the final announcement."""
    session = setup.session_id if setup is not None else final_digest(config_text, state)
    return tm.FedMapRound(
        version=PROTOCOL_VERSION,
        session_id=session,
        round_index=state.round_index,
        sender=SERVER_ID,
        gamma=state.gamma,
        psi=state.psi,
        config_json=config_text,
        setup=setup,
        final=setup is None,
    )


def final_digest(config_text: str, state: GlobalState) -> bytes:
    return round_context(config_from_json(config_text), state)


def context_of(opening: tm.RoundOpening) -> bytes:
    """What a site recomputes from an announcement: ``round_context(config, state)``."""
    if not isinstance(opening, tm.FedMapRound):
        raise RemoteProtocolError(SERVER_ID, "expected a FedMAP round announcement")
    return round_context(config_from_json(opening.config_json), state_of(opening))
