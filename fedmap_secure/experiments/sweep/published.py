"""Published reference numbers shown next to our results, each with its source.

FLamby (du Terrail et al., "FLamby: Datasets and Benchmarks for Cross-Silo
Federated Learning in Realistic Healthcare Settings", NeurIPS 2022 Datasets
and Benchmarks), Fed-Heart-Disease, per-site normalisation, accuracy averaged
over the 4 test sites. DP-FedAvg: FLamby's differential-privacy experiment,
about 0.70 for every epsilon from 1 to 50 (delta 1e-4 to 1e-2).
"""

from __future__ import annotations

from dataclasses import dataclass

FLAMBY_SOURCE = "FLamby (NeurIPS 2022), Fed-Heart-Disease, per-site normalisation"
FLAMBY_DP_SOURCE = "FLamby DP-FedAvg, Fed-Heart-Disease, delta 1e-4..1e-2"


@dataclass(frozen=True, kw_only=True)
class Reference:
    """A published mean accuracy: ``epsilon`` None = no DP; a range = flat over it."""

    dataset: str
    method: str
    mean_accuracy: float
    source: str
    epsilon_range: tuple[float, float] | None = None
    approximate: bool = False

    def applies_to(self, epsilon: float | None) -> bool:
        if self.epsilon_range is None:
            return epsilon is None
        return epsilon is not None and self.epsilon_range[0] <= epsilon <= self.epsilon_range[1]

    @property
    def label(self) -> str:
        return f"{self.method} [published: {self.source}]"


REFERENCES: tuple[Reference, ...] = (
    Reference(dataset="heart", method="pooled", mean_accuracy=0.735, source=FLAMBY_SOURCE),
    Reference(dataset="heart", method="local", mean_accuracy=0.730, source=FLAMBY_SOURCE),
    Reference(dataset="heart", method="FedAvg", mean_accuracy=0.685, source=FLAMBY_SOURCE),
    Reference(dataset="heart", method="FedProx", mean_accuracy=0.685, source=FLAMBY_SOURCE),
    Reference(dataset="heart", method="FedAdam", mean_accuracy=0.726, source=FLAMBY_SOURCE),
    Reference(dataset="heart", method="FedYogi", mean_accuracy=0.731, source=FLAMBY_SOURCE),
    Reference(dataset="heart", method="DP-FedAvg", mean_accuracy=0.712, source=FLAMBY_DP_SOURCE),
    Reference(
        dataset="heart",
        method="DP-FedAvg",
        mean_accuracy=0.70,
        source=FLAMBY_DP_SOURCE,
        epsilon_range=(1.0, 50.0),
        approximate=True,
    ),
)


def references_for(dataset: str) -> list[Reference]:
    return [r for r in REFERENCES if r.dataset == dataset]
