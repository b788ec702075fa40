"""``simulate``, ``run_site`` and ``run_server``: the Python entry points over the runtime.

``simulate`` runs the same machinery as ``fedmap-secure simulate``: in-process
(``experiments.driver.simulate_to_dir``: secure aggregation and per-site DP as
configured) or with one ``fedmap-secure site`` process per training site over
gRPC (mutual TLS, ``experiments.grpc_run``), both over the one site and server
runtime (``fedmap_secure.runtime``), and writes the same outputs (summary.json,
metrics.csv, ledgers, transcripts) under ``out``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fedmap_secure._api.models import ModelFactory, check_model, model_config
from fedmap_secure._api.sites import Site, federated_dataset
from fedmap_secure.config.schema import ModelKind, SimulationConfig
from fedmap_secure.data.types import FederatedDataset
from fedmap_secure.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console

Transport = Literal["inprocess", "grpc"]


@dataclass(frozen=True, kw_only=True)
class Metrics:
    """Test metrics of one model at one site (balanced accuracy: macro recall over classes)."""

    balanced_accuracy: float
    roc_auc: float | None
    accuracy: float


@dataclass(frozen=True, kw_only=True)
class SiteMetrics:
    """One site's final results: its personalised model and the global model on its test
    data (None where that model does not exist or the site has no test rows)."""

    site: str
    tier: str
    n_train: int
    n_test: int
    personalised: Metrics | None
    global_: Metrics | None
    epsilon_spent: float | None


@dataclass(frozen=True, kw_only=True)
class SimulationRun:
    """What ``simulate`` returns: per-site metrics, the output folder and its files."""

    out_dir: Path
    sites: Mapping[str, SiteMetrics]
    summary: Mapping[str, Any]
    model_paths: Mapping[str, Path]

    @property
    def summary_path(self) -> Path:
        return self.out_dir / "summary.json"

    @property
    def metrics_path(self) -> Path:
        """Per-round, per-site training records and test metrics (CSV)."""
        return self.out_dir / "metrics.csv"


def simulate(
    config: SimulationConfig | None,
    sites: Sequence[Site],
    *,
    model: ModelFactory | str | None = None,
    out: str | Path,
    transport: Transport = "inprocess",
    n_classes: int | None = None,
    fix_model: bool = False,
    insecure: bool = False,
    console: Console | None = None,
) -> SimulationRun:
    """Run a federated simulation of ``sites`` and return per-site results.

    ``config`` is a :class:`SimulationConfig` (``load_config(path)`` reads the
    same TOML as the CLI; ``None`` = the packaged defaults: FedMAP, DP-SGD at
    epsilon 4 per site, secure aggregation). ``model`` is a callable with no
    arguments returning a fresh ``torch.nn.Module`` that maps a batch of inputs
    to ``(batch, n_classes)`` logits, or a ``"module:function"`` name; ``None``
    uses ``config.model`` (logistic regression or MLP on flat rows). With
    ``transport="grpc"`` the server runs here and each training site in its own
    process over mutual TLS (``insecure=True``: plaintext on 127.0.0.1), so the
    model factory must be importable there (refused otherwise). ``fix_model``
    lets Opacus' ``ModuleValidator.fix`` replace layers DP-SGD cannot train
    (BatchNorm -> GroupNorm); without it such a model is refused with the list
    of what must change. ``n_classes`` defaults to the largest label + 1.
    Outputs go to ``out`` (summary.json, metrics.csv, ledgers, transcripts);
    ``console`` receives the progress and the per-site table (default: stdout).
    """
    from fedmap_secure.config.loader import load_config

    cfg = load_config() if config is None else config
    if not isinstance(cfg, SimulationConfig):
        raise ConfigError("config must be a SimulationConfig (fedmap_secure.load_config)")
    if transport not in ("inprocess", "grpc"):
        raise ConfigError(f"transport must be 'inprocess' or 'grpc', got {transport!r}")
    dataset = federated_dataset(sites, n_classes=n_classes)
    cfg = _with_model(cfg, dataset, model, transport, fix_model)
    out_dir = Path(out)
    from rich.console import Console

    shown = console or Console()
    if transport == "grpc":
        summary = _simulate_grpc(cfg, dataset, out_dir, shown, insecure=insecure)
    else:
        from fedmap_secure.experiments.driver import simulate_to_dir

        summary = simulate_to_dir(config=cfg, dataset=dataset, out_dir=out_dir, console=shown)
    return _run(out_dir, summary)


def _with_model(
    config: SimulationConfig,
    dataset: FederatedDataset,
    model: ModelFactory | str | None,
    transport: Transport,
    fix: bool,
) -> SimulationConfig:
    """``config`` with ``[model]`` naming ``model``, after checking it on the sites' inputs."""
    from fedmap_secure.fedmap.models import build_model

    if model is None:
        if fix:
            raise ConfigError("fix_model applies to a model you supply (model=...)")
        if dataset.feature_shape is not None and config.model.kind is not ModelKind.CUSTOM:
            raise ConfigError(
                f"model.kind {config.model.kind.value!r} takes flat feature rows (n, d); for "
                f"inputs of shape {dataset.feature_shape} supply a model (model=...)"
            )
        if config.model.kind is ModelKind.CUSTOM:
            raise ConfigError('model.kind = "custom": pass the factory as model=...')
        return config
    config = dataclasses.replace(config, model=model_config(model, transport=transport, fix=fix))
    probe = build_model(
        config.model,
        n_features=len(dataset.feature_names),
        n_classes=dataset.n_classes,
        seed=0,
    )
    sample = next(s.x_train[:2] for s in dataset.sites if s.n_train > 0)
    check_model(probe, dp=config.privacy.enabled, sample=sample, n_classes=dataset.n_classes)
    return config


def _simulate_grpc(
    config: SimulationConfig,
    dataset: FederatedDataset,
    out_dir: Path,
    console: Console,
    *,
    insecure: bool,
) -> dict[str, Any]:
    """As ``fedmap-secure simulate --transport grpc`` (one ``fedmap-secure site`` process per
    training site), with the sites' arrays on disk and the model factory in each site.toml."""
    from fedmap_secure._api.arrays import save_arrays
    from fedmap_secure.experiments.driver import progress_bar
    from fedmap_secure.experiments.grpc_run import GrpcSimulation, simulate_grpc_to_dir

    if not config.secagg.enabled:
        raise ConfigError("transport='grpc' always uses secure aggregation (secagg.enabled)")
    overrides: dict[str, Any] = {}
    if config.client_dp.enabled:  # as the CLI: its noise needs the configured ring
        overrides["bits"] = config.secagg.bits
    spec = GrpcSimulation(
        dataset_spec=save_arrays(dataset, out_dir / "grpc" / "site-data"),
        insecure=insecure,
        dropout_fraction=config.secagg.dropout_fraction,
        corrupt_fraction=config.secagg.corrupt_fraction,
        model_factory=config.model.factory if config.model.kind is ModelKind.CUSTOM else None,
        **overrides,
    )
    with progress_bar(console, f"{config.method.value} on {dataset.name} (gRPC)") as progress:
        return simulate_grpc_to_dir(
            config=config,
            dataset=dataset,
            spec=spec,
            out_dir=out_dir,
            console=console,
            progress=progress,
        )


def _metrics(entry: Any) -> Metrics | None:
    if not isinstance(entry, Mapping):
        return None
    return Metrics(
        balanced_accuracy=float(entry["balanced_accuracy"]),
        roc_auc=None if entry.get("roc_auc") is None else float(entry["roc_auc"]),
        accuracy=float(entry["accuracy"]),
    )


def _run(out_dir: Path, summary: Mapping[str, Any]) -> SimulationRun:
    sites = {
        str(s["site"]): SiteMetrics(
            site=str(s["site"]),
            tier=str(s["tier"]),
            n_train=int(s["n_train"]),
            n_test=int(s["n_test"]),
            personalised=_metrics(s.get("personalised")),
            global_=_metrics(s.get("global")),
            epsilon_spent=None if s.get("epsilon_spent") is None else float(s["epsilon_spent"]),
        )
        for s in summary["sites"]
    }
    return SimulationRun(
        out_dir=out_dir, sites=sites, summary=summary, model_paths=_model_paths(summary)
    )


def run_site(
    config: str | Path, *, model: ModelFactory | str | None = None, insecure: bool = False
) -> None:
    """Run one site of a deployment (as ``fedmap-secure site --config site.toml``).

    ``model``: the custom model this site agrees to build (an importable
    ``module:function`` or top-level callable); the server's run configuration
    must name the same factory (``[model] kind = "custom"``, ``factory = ...``).
    """
    _allow(model)
    from fedmap_secure.transport.processes import run_site as run

    run(Path(config), insecure=insecure)


def run_server(
    config: str | Path, *, model: ModelFactory | str | None = None, insecure: bool = False
) -> None:
    """Run the aggregation server of a deployment (as ``fedmap-secure server``)."""
    _allow(model)
    from fedmap_secure.transport.processes import run_server as run

    run(Path(config), insecure=insecure)


def _allow(model: ModelFactory | str | None) -> None:
    if model is not None:
        model_config(model, transport="grpc", fix=False)


def _model_paths(summary: Mapping[str, Any]) -> dict[str, Path]:
    """Each site's personalised model file and the global one (``"global"``), from summary.json.

    Every run writes them (``fedmap_secure.load_model`` reads them); a site that
    did not train and a method without a global model have no entry.
    """
    models = summary.get("models")
    if not isinstance(models, Mapping):
        return {}
    paths = {str(site): Path(str(path)) for site, path in dict(models.get("sites") or {}).items()}
    if models.get("global") is not None:
        paths["global"] = Path(str(models["global"]))
    return paths
