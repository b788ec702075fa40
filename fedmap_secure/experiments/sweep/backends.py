"""Where runs execute: this process, a local process pool, or a Ray cluster.

All three run ``runner.execute_one`` on plain strings and write the same
result layout; only scheduling differs.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from fedmap_secure.errors import ConfigError
from fedmap_secure.experiments.sweep.runner import execute_one, single_thread


class InlineBackend:
    """Runs every task in the calling process, in order (debugging and tests)."""

    def run(
        self, tasks: Sequence[str], out: str, run_fn_ref: str, done: Callable[[str], None]
    ) -> None:
        for task in tasks:
            done(execute_one(task, out, run_fn_ref))


class ProcessBackend:
    """A ``ProcessPoolExecutor`` of ``workers`` fresh interpreters (spawn or forkserver).

    Fresh interpreters: no inherited torch thread pools or locks; each worker
    sets one torch thread.
    """

    def __init__(self, *, workers: int, start_method: str = "spawn") -> None:
        if workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {workers}")
        if start_method not in ("spawn", "forkserver"):
            raise ConfigError(f"start method must be spawn or forkserver, got {start_method!r}")
        self._workers = workers
        self._context = multiprocessing.get_context(start_method)

    def run(
        self, tasks: Sequence[str], out: str, run_fn_ref: str, done: Callable[[str], None]
    ) -> None:
        with ProcessPoolExecutor(
            max_workers=self._workers, mp_context=self._context, initializer=single_thread
        ) as pool:
            futures: set[Future[str]] = {
                pool.submit(execute_one, t, out, run_fn_ref) for t in tasks
            }
            try:
                while futures:
                    finished, futures = wait(futures, return_when=FIRST_COMPLETED)
                    for future in finished:
                        done(future.result())
            except BaseException:
                for future in futures:
                    future.cancel()
                raise


def _ray_execute(spec_json: str, out: str, run_fn_ref: str) -> str:
    single_thread()
    return execute_one(spec_json, out, run_fn_ref)


class RayBackend:
    """Runs each task as a Ray task (1 CPU each) on an existing or local Ray cluster.

    ``address=None`` starts (or joins) a local instance; ``"auto"`` or
    ``"ray://host:port"`` joins a cluster, whose workers must have
    fedmap-secure installed and ``out`` on a shared filesystem.
    """

    def __init__(self, *, address: str | None = None, num_cpus: int | None = None) -> None:
        try:
            ray = importlib.import_module("ray")  # optional extra: no static import
        except ImportError:
            raise ConfigError(
                "the ray backend needs Ray: pip install 'fedmap-secure[ray]'"
            ) from None
        self._ray: Any = ray
        self._address = address
        self._num_cpus = num_cpus

    def _init(self) -> None:
        if self._ray.is_initialized():
            return
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if self._address is not None:
            options["address"] = self._address
        else:
            options["num_cpus"] = self._num_cpus
            pythonpath = os.pathsep.join(
                p for p in (os.getcwd(), os.environ.get("PYTHONPATH")) if p
            )
            options["runtime_env"] = {"env_vars": {"PYTHONPATH": pythonpath}}
        self._ray.init(**options)

    def run(
        self, tasks: Sequence[str], out: str, run_fn_ref: str, done: Callable[[str], None]
    ) -> None:
        self._init()
        remote = self._ray.remote(num_cpus=1, max_retries=0)(_ray_execute)
        pending = [remote.remote(t, out, run_fn_ref) for t in tasks]
        while pending:
            ready, pending = self._ray.wait(pending, num_returns=1)
            for ref in ready:
                done(self._ray.get(ref))
