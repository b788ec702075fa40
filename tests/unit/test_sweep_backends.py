from __future__ import annotations

import sys

import pytest

from fedmap_secure.errors import ConfigError
from fedmap_secure.experiments.sweep.backends import ProcessBackend, RayBackend


def test_process_backend_refuses_bad_settings() -> None:
    with pytest.raises(ConfigError, match="--workers"):
        ProcessBackend(workers=0)
    with pytest.raises(ConfigError, match="start method"):
        ProcessBackend(workers=1, start_method="fork")


def test_ray_backend_without_ray_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    with pytest.raises(ConfigError, match=r"fedmap-secure\[ray\]"):
        RayBackend()
