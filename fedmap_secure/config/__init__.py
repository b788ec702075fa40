"""Simulation configuration: typed schema, strict TOML loader, documented defaults."""

from fedmap_secure.config.loader import (
    config_to_dict,
    default_config_text,
    load_config,
    parse_config,
)
from fedmap_secure.config.schema import (
    BoundsConfig,
    FedProxConfig,
    Method,
    ModelConfig,
    ModelKind,
    PersonalisationConfig,
    PriorConfig,
    PriorForm,
    ScoreConfig,
    ServerConfig,
    SimulationConfig,
)

__all__ = [
    "BoundsConfig",
    "FedProxConfig",
    "Method",
    "ModelConfig",
    "ModelKind",
    "PersonalisationConfig",
    "PriorConfig",
    "PriorForm",
    "ScoreConfig",
    "ServerConfig",
    "SimulationConfig",
    "config_to_dict",
    "default_config_text",
    "load_config",
    "parse_config",
]
