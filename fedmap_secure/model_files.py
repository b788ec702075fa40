"""Model files: a trained model's weights plus a JSON sidecar that makes them usable alone.

A run writes each site's personalised model and the final global model as two
files side by side:

- ``<stem>.pt``: the ``state_dict`` written by ``torch.save`` (tensors only) and
  read back with ``torch.load(..., weights_only=True)``, PyTorch's restricted
  unpickler that only rebuilds tensors and plain containers. No Python object
  is ever pickled, so loading a file runs no code from it.
- ``<stem>.json``: the sidecar. Format tag and version, the model config
  (``kind``, ``hidden``) or ``"custom"``, ``n_features``, ``n_classes``, the
  class labels (if declared), the ordered feature names, the consortium's
  :class:`~fedmap_secure.data.schema.FeatureSchema` (the public preprocessing
  constants) and its digest, round, run id, site (``"global"`` for the global
  model), kind (personalised or global), the epsilon the site had spent (or
  null), the SHA-256 of the weights file and, optionally, the site's decision
  threshold (``decision_threshold``: its value and how it was chosen; ``predict``
  uses it; files without the key load as argmax).

:func:`load_model` checks the sidecar (format, version, every key, the schema
digest, the weights hash), rebuilds the architecture with
:func:`fedmap_secure.fedmap.models.build_model` (or loads into a module the
caller supplies, for custom models), loads the weights strictly and returns a
:class:`RawFeatureModel` in eval mode. It predicts on *raw* feature rows: it
applies the schema's ``transform`` (clip to the declared range, centre, scale)
before the network, exactly as the sites did in training, so a user never
re-implements preprocessing. A DataFrame is reordered by column name.

The files hold a model trained under the run's privacy settings; they are as
private as the model itself (a personalised model stays at its site).

Writing is atomic per file (temporary file, then ``os.replace``); the sidecar is
written last, so a sidecar always describes a complete weights file.
"""

from __future__ import annotations

import enum
import hashlib
import io
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from fedmap_secure.config.schema import ModelConfig, ModelKind
from fedmap_secure.data.schema import FeatureSchema
from fedmap_secure.data.types import FederatedDataset
from fedmap_secure.errors import ConfigError, DataError, ModelFileError
from fedmap_secure.fedmap.threshold import ThresholdChoice, predict_with_threshold

FORMAT = "fedmap-secure/model"
FORMAT_VERSION = 1
WEIGHTS_SUFFIX = ".pt"
SIDECAR_SUFFIX = ".json"
GLOBAL_SITE = "global"
CUSTOM_MODEL = "custom"

_SIDECAR_KEYS = frozenset(
    {
        "format",
        "format_version",
        "kind",
        "site",
        "round",
        "run_id",
        "epsilon_spent",
        "model",
        "n_features",
        "n_classes",
        "class_labels",
        "feature_names",
        "feature_schema",
        "feature_schema_digest",
        "weights_file",
        "weights_sha256",
    }
)
_OPTIONAL_KEYS = frozenset({"decision_threshold"})
"""Keys a sidecar may lack (files written before they existed still load)."""


class ModelFileKind(enum.Enum):
    """Which model a file holds: a site's personalised model or the run's global model."""

    PERSONALISED = "personalised"
    GLOBAL = "global"


@dataclass(frozen=True, kw_only=True)
class ModelMeta:
    """What the sidecar records about a model (see the module docstring).

    ``model`` is the run's :class:`ModelConfig`, or None for a custom
    ``nn.Module`` (then :func:`load_model` needs the module to load into).
    ``site`` is the site's name for a personalised model and ``"global"`` for
    the global model. ``epsilon_spent`` is what the site's ledger had spent when
    the model was written (None without DP, or for the global model of a run
    whose sites spent different amounts).
    """

    model: ModelConfig | None
    n_features: int
    n_classes: int
    schema: FeatureSchema
    round: int
    run_id: str
    site: str
    kind: ModelFileKind
    epsilon_spent: float | None = None
    class_labels: tuple[str, ...] | None = None
    decision_threshold: ThresholdChoice | None = None
    """The site's decision rule for a binary personalised model (``[training] threshold``):
    ``predict`` returns class 1 when p(1 | x) >= its value. None: argmax."""

    def __post_init__(self) -> None:
        if self.n_features != len(self.schema):
            raise ConfigError(
                f"model meta: n_features {self.n_features} but the schema has "
                f"{len(self.schema)} features"
            )
        if self.n_classes < 2:
            raise ConfigError(f"model meta: n_classes must be >= 2, got {self.n_classes}")
        if self.class_labels is not None and len(self.class_labels) != self.n_classes:
            raise ConfigError(
                f"model meta: {len(self.class_labels)} class labels for {self.n_classes} classes"
            )
        if self.round < 0:
            raise ConfigError(f"model meta: round must be >= 0, got {self.round}")
        if not self.run_id:
            raise ConfigError("model meta: run_id must not be empty")
        if (self.kind is ModelFileKind.GLOBAL) != (self.site == GLOBAL_SITE):
            raise ConfigError(
                f"model meta: a {self.kind.value} model cannot have site {self.site!r} "
                f"(site {GLOBAL_SITE!r} is the global model's, and only its)"
            )
        if not self.site or "/" in self.site or "\\" in self.site or self.site.startswith("."):
            raise ConfigError(f"model meta: site {self.site!r} is not usable in a file name")
        if self.epsilon_spent is not None and not (
            math.isfinite(self.epsilon_spent) and self.epsilon_spent >= 0
        ):
            raise ConfigError(f"model meta: epsilon_spent must be >= 0, got {self.epsilon_spent}")

    @classmethod
    def for_dataset(
        cls,
        dataset: FederatedDataset,
        *,
        model: ModelConfig | None,
        round: int,
        run_id: str,
        site: str = GLOBAL_SITE,
        epsilon_spent: float | None = None,
    ) -> ModelMeta:
        """The meta of a model trained on ``dataset`` (its schema, classes, feature count).

        ``site`` ``"global"`` (the default) makes a GLOBAL model's meta, any other
        name a PERSONALISED one.
        """
        kind = ModelFileKind.GLOBAL if site == GLOBAL_SITE else ModelFileKind.PERSONALISED
        return cls(
            model=model,
            n_features=len(dataset.schema),
            n_classes=dataset.n_classes,
            schema=dataset.schema,
            round=round,
            run_id=run_id,
            site=site,
            kind=kind,
            epsilon_spent=epsilon_spent,
            class_labels=dataset.class_labels,
        )

    @property
    def stem(self) -> str:
        """Default file stem: ``global`` or ``site-<name>``."""
        return GLOBAL_SITE if self.kind is ModelFileKind.GLOBAL else f"site-{self.site}"


RawRows = npt.ArrayLike | torch.Tensor | Any
"""Raw feature rows: an (n, d) array or tensor in schema order, or a pandas DataFrame."""


class RawFeatureModel(nn.Module):
    """A trained network behind the consortium's declared preprocessing.

    ``model(rows)`` returns logits for raw feature rows (array, tensor or
    DataFrame); ``predict_proba`` and ``predict`` return numpy arrays. The
    wrapped network (which expects *transformed* rows) is ``network``.
    """

    def __init__(self, network: nn.Module, meta: ModelMeta) -> None:
        super().__init__()
        self.network = network
        self.meta = meta

    @property
    def schema(self) -> FeatureSchema:
        return self.meta.schema

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.meta.schema.names

    @property
    def classes(self) -> tuple[str, ...] | tuple[int, ...]:
        """The declared class labels (the sidecar's, else the schema's), else indices 0..K-1."""
        if self.meta.class_labels is not None:
            return self.meta.class_labels
        if self.meta.schema.classes is not None:
            return self.meta.schema.classes
        return tuple(range(self.meta.n_classes))

    def transform(self, rows: RawRows) -> torch.Tensor:
        """Raw rows -> the float32 tensor the network was trained on (``schema.transform``)."""
        return torch.from_numpy(self.schema.transform(raw_matrix(rows, self.schema)))

    def forward(self, rows: RawRows) -> torch.Tensor:
        logits: torch.Tensor = self.network(self.transform(rows))
        return logits

    def predict_proba(self, rows: RawRows) -> npt.NDArray[np.float64]:
        """Class probabilities (n, K) for raw rows."""
        with torch.no_grad():
            return torch.softmax(self.forward(rows), dim=1).to(torch.float64).numpy()

    @property
    def threshold(self) -> float | None:
        """The recorded decision threshold on p(class 1) (None: argmax)."""
        choice = self.meta.decision_threshold
        return None if choice is None else choice.value

    def predict(self, rows: RawRows) -> npt.NDArray[np.int64]:
        """The class index per raw row: argmax, or p(1) >= the sidecar's decision threshold."""
        return predict_with_threshold(self.predict_proba(rows), self.threshold)


def raw_matrix(rows: RawRows, schema: FeatureSchema) -> npt.NDArray[np.float64]:
    """An (n, d) float64 array in schema order from an array, a tensor or a DataFrame.

    A DataFrame (anything with ``columns`` and ``to_numpy``) is reordered by
    column name; missing or extra columns are refused with a ``DataError``.
    """
    if isinstance(rows, torch.Tensor):
        return rows.detach().cpu().to(torch.float64).numpy()
    columns = getattr(rows, "columns", None)
    if columns is not None and hasattr(rows, "to_numpy"):
        names = [str(c) for c in columns]
        order = schema.reorder_columns(names, source="DataFrame")
        matrix = np.asarray(rows.to_numpy(), dtype=np.float64)
        return matrix[:, order]
    try:
        return np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"raw feature rows must be numeric: {exc}") from exc


# --- saving ------------------------------------------------------------------------------


def save_model(directory_or_path: str | Path, *, model: nn.Module, meta: ModelMeta) -> Path:
    """Write ``model``'s weights and sidecar; return the sidecar's path.

    ``directory_or_path`` is either a directory (created if missing; files are
    ``<dir>/<meta.stem>.pt`` and ``.json``) or a path ending in ``.json`` or
    ``.pt`` naming the pair. An Opacus ``GradSampleModule`` is unwrapped.

    Intended call from a run (site runtime, after the last round)::

        from fedmap_secure.model_files import ModelMeta, save_model

        save_model(
            out_dir / "models",
            model=site_model,                      # the personalised nn.Module
            meta=ModelMeta.for_dataset(
                dataset,                           # its schema, classes, feature count
                model=config.model,                # ModelConfig (None for a custom module)
                round=config.rounds - 1,
                run_id=run_id,
                site=site.name,                    # default "global": the global model
                epsilon_spent=ledger_report.epsilon,   # None without DP
            ),
        )                                          # -> out_dir/models/site-<name>.json
    """
    weights_path, sidecar_path = _paths(Path(directory_or_path), meta)
    network = _unwrap(model)
    state = {k: v.detach().cpu().clone().contiguous() for k, v in network.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    _atomic_write(weights_path, payload)
    sidecar = _sidecar(meta, weights_file=weights_path.name, digest=_sha256(payload))
    text = json.dumps(sidecar, indent=2, sort_keys=True) + "\n"
    _atomic_write(sidecar_path, text.encode("utf-8"))
    return sidecar_path


def _paths(target: Path, meta: ModelMeta) -> tuple[Path, Path]:
    if target.suffix in (WEIGHTS_SUFFIX, SIDECAR_SUFFIX):
        stem = target.with_suffix("")
        stem.parent.mkdir(parents=True, exist_ok=True)
    else:
        target.mkdir(parents=True, exist_ok=True)
        stem = target / meta.stem
    return stem.with_suffix(WEIGHTS_SUFFIX), stem.with_suffix(SIDECAR_SUFFIX)


def _unwrap(model: nn.Module) -> nn.Module:
    inner = getattr(model, "_module", None)
    return inner if isinstance(inner, nn.Module) else model


def _sidecar(meta: ModelMeta, *, weights_file: str, digest: str) -> dict[str, Any]:
    model: dict[str, Any] | str
    if meta.model is None or meta.model.kind is ModelKind.CUSTOM:
        # a user's module: its factory is code, not data; load_model needs module=...
        model = CUSTOM_MODEL
    else:
        model = {"kind": meta.model.kind.value, "hidden": list(meta.model.hidden)}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": meta.kind.value,
        "site": meta.site,
        "round": meta.round,
        "run_id": meta.run_id,
        "epsilon_spent": meta.epsilon_spent,
        "model": model,
        "n_features": meta.n_features,
        "n_classes": meta.n_classes,
        "class_labels": None if meta.class_labels is None else list(meta.class_labels),
        "feature_names": list(meta.schema.names),
        "feature_schema": meta.schema.to_json(),
        "feature_schema_digest": meta.schema.digest(),
        "weights_file": weights_file,
        "weights_sha256": digest,
        "decision_threshold": (
            None if meta.decision_threshold is None else meta.decision_threshold.as_dict()
        ),
    }


def _atomic_write(path: Path, payload: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sha256(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


# --- loading -----------------------------------------------------------------------------


def read_meta(path: str | Path) -> tuple[ModelMeta, Path, str]:
    """Parse and check a sidecar; return (meta, weights path, expected weights SHA-256).

    ``path`` may name the sidecar (``.json``) or the weights file (``.pt``).
    """
    sidecar_path = Path(path).with_suffix(SIDECAR_SUFFIX)
    try:
        text = sidecar_path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ModelFileError(f"{sidecar_path}: model sidecar not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{sidecar_path}: cannot read the model sidecar: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{sidecar_path}: not valid JSON: {exc}") from exc
    meta, weights_file, digest = _parse_sidecar(data, sidecar_path)
    weights = sidecar_path.parent / weights_file
    return meta, weights, digest


def _parse_sidecar(data: object, source: Path) -> tuple[ModelMeta, str, str]:
    if not isinstance(data, dict):
        raise ModelFileError(f"{source}: the sidecar must be a JSON object")
    if data.get("format") != FORMAT:
        raise ModelFileError(f"{source}: not a fedmap-secure model sidecar (format tag)")
    if data.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(
            f"{source}: unsupported model format version {data.get('format_version')!r} "
            f"(this version reads {FORMAT_VERSION})"
        )
    if not _SIDECAR_KEYS <= set(data) <= _SIDECAR_KEYS | _OPTIONAL_KEYS:
        missing = sorted(_SIDECAR_KEYS - set(data))
        extra = sorted(set(data) - _SIDECAR_KEYS - _OPTIONAL_KEYS)
        raise ModelFileError(f"{source}: sidecar keys missing {missing}, unexpected {extra}")
    try:
        schema = FeatureSchema.from_json(data["feature_schema"], source=f"{source}")
        if schema.digest() != data["feature_schema_digest"]:
            raise ModelFileError(f"{source}: feature schema does not match its digest")
        if list(schema.names) != data["feature_names"]:
            raise ModelFileError(f"{source}: feature_names disagree with the feature schema")
        weights_file, digest = data["weights_file"], data["weights_sha256"]
        if not isinstance(weights_file, str) or Path(weights_file).name != weights_file:
            raise ModelFileError(f"{source}: weights_file must be a bare file name")
        if not isinstance(digest, str) or len(digest) != 64:
            raise ModelFileError(f"{source}: weights_sha256 must be a hex SHA-256")
        meta = ModelMeta(
            model=_model_config(data["model"], source),
            n_features=_int(data["n_features"], "n_features", source),
            n_classes=_int(data["n_classes"], "n_classes", source),
            schema=schema,
            round=_int(data["round"], "round", source),
            run_id=_str(data["run_id"], "run_id", source),
            site=_str(data["site"], "site", source),
            kind=ModelFileKind(data["kind"]),
            epsilon_spent=_optional_float(data["epsilon_spent"], "epsilon_spent", source),
            class_labels=_labels(data["class_labels"], source),
            decision_threshold=_threshold(data.get("decision_threshold"), source),
        )
    except ModelFileError:
        raise
    except (ConfigError, ValueError, TypeError) as exc:
        raise ModelFileError(f"{source}: invalid sidecar: {exc}") from exc
    return meta, weights_file, digest


def _model_config(value: object, source: Path) -> ModelConfig | None:
    if value == CUSTOM_MODEL:
        return None
    if not isinstance(value, Mapping) or set(value) != {"kind", "hidden"}:
        raise ModelFileError(f"{source}: 'model' must be {{kind, hidden}} or {CUSTOM_MODEL!r}")
    hidden = value["hidden"]
    if not isinstance(hidden, list) or not all(
        isinstance(h, int) and not isinstance(h, bool) for h in hidden
    ):
        raise ModelFileError(f"{source}: model.hidden must be a list of ints")
    return ModelConfig(kind=ModelKind(value["kind"]), hidden=tuple(hidden))


def _int(value: object, name: str, source: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelFileError(f"{source}: {name} must be an integer")
    return value


def _str(value: object, name: str, source: Path) -> str:
    if not isinstance(value, str):
        raise ModelFileError(f"{source}: {name} must be a string")
    return value


def _optional_float(value: object, name: str, source: Path) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ModelFileError(f"{source}: {name} must be a number or null")
    return float(value)


def _threshold(value: object, source: Path) -> ThresholdChoice | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ModelFileError(f"{source}: decision_threshold must be an object or null")
    try:
        choice = ThresholdChoice(**dict(value))
    except TypeError as exc:
        raise ModelFileError(f"{source}: decision_threshold: {exc}") from exc
    if isinstance(choice.value, bool) or not isinstance(choice.value, int | float):
        raise ModelFileError(f"{source}: decision_threshold.value must be a number")
    if not 0.0 <= choice.value <= 1.0:
        raise ModelFileError(f"{source}: decision_threshold.value must be in [0, 1]")
    return choice


def _labels(value: object, source: Path) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ModelFileError(f"{source}: class_labels must be a list of strings or null")
    return tuple(value)


def load_model(path: str | Path, *, module: nn.Module | None = None) -> RawFeatureModel:
    """Load a saved model: check the sidecar and weights hash, return it ready, in eval mode.

    ``path`` names the sidecar (``.json``) or the weights (``.pt``). The result
    predicts on raw feature rows (see :class:`RawFeatureModel`). For a model
    saved from a custom ``nn.Module`` pass ``module``, a freshly built instance
    of the same architecture; for the built-in kinds it is rebuilt from the
    sidecar. Raises ``ModelFileError`` for a missing, malformed or tampered file.

    Example::

        import fedmap_secure
        model = fedmap_secure.load_model("runs/x/models/global.json")
        proba = model.predict_proba(frame)   # a DataFrame with the feature columns
    """
    meta, weights_path, digest = read_meta(path)
    try:
        payload = weights_path.read_bytes()
    except FileNotFoundError as exc:
        raise ModelFileError(f"{weights_path}: weights file not found") from exc
    except OSError as exc:
        raise ModelFileError(f"{weights_path}: cannot read the weights file: {exc}") from exc
    if _sha256(payload) != digest:
        raise ModelFileError(
            f"{weights_path}: SHA-256 differs from the sidecar's; the weights were modified"
        )
    network = _network(meta, module, weights_path)
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, ...
        raise ModelFileError(f"{weights_path}: not a tensor-only state_dict: {exc}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(f"{weights_path}: expected a dict of tensors")
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0:2]
        raise ModelFileError(
            f"{weights_path}: weights do not fit the model: {' '.join(first)}"
        ) from exc
    wrapped = RawFeatureModel(network, meta)
    wrapped.eval()
    return wrapped


def _network(meta: ModelMeta, module: nn.Module | None, source: Path) -> nn.Module:
    if module is not None:
        return _unwrap(module)
    if meta.model is None:
        raise ModelFileError(
            f"{source}: saved from a custom nn.Module; pass module=<a fresh instance> to load it"
        )
    from fedmap_secure.fedmap.models import build_model

    return build_model(meta.model, n_features=meta.n_features, n_classes=meta.n_classes, seed=0)


def model_files(directory: str | Path) -> Sequence[Path]:
    """The sidecars in ``directory``, sorted by name (global first if present)."""
    root = Path(directory)
    found = sorted(root.glob(f"*{SIDECAR_SUFFIX}"))
    return sorted(found, key=lambda p: (p.stem != GLOBAL_SITE, p.name))
