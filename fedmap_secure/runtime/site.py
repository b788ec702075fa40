"""What a site does in a round, written once for every transport.

A ``SiteRuntime`` is built from the site's own data, its own privacy policy
(``SitePolicy``) and its state folder. It answers the server's typed
announcements (``FedMapRound``), whichever transport carried them:

- **First announcement**: parse the run configuration; check it against the
  site's policy (``SitePolicy.check_run``: a run asking for less protection is
  refused with one line naming the setting, before anything is trained or
  released); open the site's ledger in its state folder (continued across
  runs) and calibrate its noise for this run against the remaining budget
  (``SitePrivacy.open``); build the local model, prior and trainer (DP-SGD
  when DP is on, else the non-private Adam MAP trainer).
- **Training round** (``train_round``): load gamma/psi; a site of another tier
  declines (NO_DATA); otherwise the ledger gate charges the round durably
  *before* any release (or the site declines with BUDGET_EXHAUSTED); it trains,
  scores and returns its clipped contribution vector; it records its own
  report (test metrics every ``evaluate_every`` rounds) and logs one progress
  line (round, outcome, epsilon spent and remaining).
- **Final announcement** (``finish``): a fine-tune-tier site trains its
  personalised model under the final (gamma, psi) and under its OWN privacy
  policy (DP on: DP-SGD calibrated for ``finetune_rounds`` against its own
  ledger, each round charged before it trains; ``enabled = false`` in its
  own file: recorded as non-private releases); every site evaluates; the
  site writes its records (``result.json``), its privacy summary
  (``dp.json``) and, if it trained, its personalised model
  (``models/personalised.pt`` + ``.json`` sidecar, ``fedmap_secure.model_files``;
  or ``SiteSetup.model_path``) into its state folder. The model's run id is
  ``announcement.run_id(config)``: the announced run configuration's digest, the same at
  every site and at the server (two runs of one configuration share it).

On the first announcement whose ``[features]`` contract is non-empty the site
also checks its own feature schema against it (``check_site_schema``); a run
that announces no contract (a deployed ``run.toml`` without ``[features]``) is
not checked.

Nothing here depends on the transport: the in-process transport and the gRPC
site driver both call ``handle``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import torch

from fedmap_secure.aggregation import FloatVector, VectorLayout
from fedmap_secure.config.privacy import OmegaRelease, PrivacyConfig
from fedmap_secure.config.schema import Method, ModelKind, SimulationConfig
from fedmap_secure.config.solve import SolveCandidate, SolveStart
from fedmap_secure.data.contract import check_site_schema
from fedmap_secure.data.schema import FeatureSchema
from fedmap_secure.data.types import SiteData, Tier
from fedmap_secure.errors import (
    BudgetExceededError,
    ConfigError,
    LocalProtocolError,
    RemoteProtocolError,
)
from fedmap_secure.fedmap.contribution import exact_clipped_mean
from fedmap_secure.fedmap.evaluation import predict_proba
from fedmap_secure.fedmap.icnn import ConvexPrior
from fedmap_secure.fedmap.methods import (
    GlobalState,
    MethodStrategy,
    contribution_layout,
    make_strategy,
)
from fedmap_secure.fedmap.models import build_model, load_flat_vector
from fedmap_secure.fedmap.site import Phase, Site, SiteReport, make_generator, site_seed
from fedmap_secure.fedmap.solve_choice import SolveChoice, pick
from fedmap_secure.fedmap.threshold import ThresholdChoice, argmax_choice, balanced_accuracy
from fedmap_secure.model_files import ModelFileKind, ModelMeta, save_model
from fedmap_secure.privacy.ledger import PrivacyLedger
from fedmap_secure.runtime.announcement import config_from_json, run_id, state_of
from fedmap_secure.runtime.channel import Answer
from fedmap_secure.runtime.privacy import (
    AfterCharge,
    SitePolicy,
    SitePrivacy,
    charge_non_private,
    non_private_ledger,
    run_epsilon,
)
from fedmap_secure.runtime.records import write_records
from fedmap_secure.runtime.results import SiteResult, TrainerFactory
from fedmap_secure.runtime.state import derived_seed, initial_state, site_holdout
from fedmap_secure.secagg.config import SERVER_ID
from fedmap_secure.training.interface import (
    DecisionThreshold,
    DpPersonalised,
    LocalTrainer,
    LocalTrainingConfig,
    LocalTrainingResult,
)
from fedmap_secure.transport import messages as tm

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
DP_FILE = "dp.json"
MODEL_FILE = Path("models") / "personalised.json"
"""The personalised model's sidecar, relative to the state folder (weights: ``.pt``)."""


@runtime_checkable
class PreparesModel(Protocol):
    """A trainer that may need a fixed copy of the model (Opacus-compatible layers)."""

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module: ...


@dataclass(frozen=True, kw_only=True)
class SiteSetup:
    """What a site runtime is built from: everything is the site's own.

    ``state_dir``: the site's ledger, ``result.json``, ``dp.json`` and
    personalised model (a site that releases under DP needs one).
    ``plain_trainer``: the non-private trainer (default Adam MAP), used when DP
    is off and for the fine-tune tier. ``schema``: the site's feature schema
    (checked against the run's ``[features]``, written into its model file;
    default the identity schema of ``feature_names``). ``model_path``: where
    the personalised model's sidecar goes (default ``state_dir/models/
    personalised.json``; none without either).
    """

    data: SiteData
    feature_names: tuple[str, ...]
    n_classes: int
    policy: SitePolicy
    state_dir: Path | None = None
    schema: FeatureSchema | None = None
    model_path: Path | None = None
    plain_trainer: TrainerFactory | None = None
    after_charge: AfterCharge | None = None
    run_label: str = ""


def adam_trainer(site: SiteData, training: LocalTrainingConfig) -> LocalTrainer:
    """The non-private local trainer (Adam MAP with validation early stopping)."""
    from fedmap_secure.training.local import AdamMapTrainer

    return AdamMapTrainer(training)


class SiteRuntime:
    """One site's part in a run (see the module docstring); ``close()`` after use."""

    def __init__(self, setup: SiteSetup) -> None:
        self.setup = setup
        self.data = setup.data
        self.reports: list[SiteReport] = []
        self.result: SiteResult | None = None
        self.final_state: GlobalState | None = None
        self.privacy: SitePrivacy | None = None
        self._non_private: PrivacyLedger | None = None
        self._config: SimulationConfig | None = None
        self._strategy: MethodStrategy | None = None
        self._site: Site | None = None
        self.model_file: Path | None = None
        self._threshold_rows: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]] | None = None
        self._threshold_fallback: ThresholdChoice | None = None
        self._solve_choice: SolveChoice | None = None

    @property
    def feature_schema(self) -> FeatureSchema:
        schema = self.setup.schema
        return FeatureSchema.identity(self.setup.feature_names) if schema is None else schema

    @property
    def name(self) -> str:
        return self.data.name

    @property
    def declined_rounds(self) -> list[int]:
        return [] if self.privacy is None else list(self.privacy.guard.declined_rounds)

    def close(self) -> None:
        if self.privacy is not None:
            self.privacy.close()
        if self._non_private is not None:
            self._non_private.close()

    # --- the transport's entry point ------------------------------------------------------
    def handle(self, opening: tm.RoundOpening) -> Answer:
        """Answer one announcement: a training round's vector or decline, or the final step."""
        if not isinstance(opening, tm.FedMapRound):
            raise RemoteProtocolError(SERVER_ID, "expected a FedMAP round announcement")
        config = config_from_json(opening.config_json)
        state = state_of(opening)
        if opening.final:
            self.finish(config, state)
            return None
        layout = None if opening.setup is None else opening.setup.layout
        return self.train_round(config, state, layout)

    # --- a training round ------------------------------------------------------------------
    def train_round(
        self, config: SimulationConfig, state: GlobalState, layout: VectorLayout | None
    ) -> FloatVector | tm.DeclineReason:
        """One announced round (``layout`` None: a method that aggregates nothing)."""
        site, strategy = self._start(config, state)
        r = state.round_index
        every = config.evaluate_every
        evaluate = every > 0 and (r + 1) % every == 0
        if self.data.tier is not Tier.TRAIN:
            self._record(r, Phase.TRAIN, None, 0, evaluate=evaluate)
            return tm.DeclineReason.NO_DATA
        expected = contribution_layout(strategy, state, site.prior)
        if expected != layout:
            raise RemoteProtocolError(SERVER_ID, "announced layout differs from the method's")
        if self.privacy is not None and not self.privacy.admit(r):
            self._record(r, Phase.TRAIN, None, 0, evaluate=evaluate, declined=True)
            self._progress(config, r, "declined (budget)")
            return tm.DeclineReason.BUDGET_EXHAUSTED
        if self._non_private is not None and layout is not None:
            charge_non_private(self._non_private, r, "contribution vector without DP")
        try:
            training = site.train(strategy, start_from_gamma=strategy.resets_to_gamma)
            vector, clipped = (None, 0) if layout is None else site.contribute(strategy, layout)
        except BudgetExceededError as exc:
            log.warning("site %s declines round %d: %s", self.name, r, exc)
            self._record(r, Phase.TRAIN, None, 0, evaluate=evaluate, declined=True)
            return tm.DeclineReason.BUDGET_EXHAUSTED
        self._record(r, Phase.TRAIN, training, clipped, evaluate=evaluate)
        self._progress(config, r, "trained" if vector is None else "contributed")
        return tm.DeclineReason.NO_DATA if vector is None else vector

    # --- the final announcement ------------------------------------------------------------
    def finish(self, config: SimulationConfig, state: GlobalState) -> SiteResult:
        """Fine-tune (fine-tune tier), evaluate, write the site's records; returns its result.

        A training site releases nothing at the final step (its ledger stays as the
        rounds left it). A fine-tune-tier site trains its personalised model under its
        OWN policy (``_open_finetune_privacy``): each fine-tuning round is charged to
        its ledger before it trains, or it stops fine-tuning (declined).
        """
        finetune = self.data.tier is Tier.FINETUNE and config.finetune_rounds > 0
        if finetune and config.method is not Method.LOCAL:  # local: nobody releases anything
            self.prepare(config, releasing=False)
            self._open_finetune_privacy(config)
            if self.privacy is not None:  # rebuilt with the fine-tune's DP-SGD trainer
                self._site = None
        site, strategy = self._start(config, state, releasing=False)
        if finetune:
            for i in range(config.finetune_rounds):
                r = state.round_index + i
                if self.privacy is not None and not self.privacy.admit(r):
                    self._record(r, Phase.FINETUNE, None, 0, evaluate=False, declined=True)
                    break
                if self._non_private is not None:
                    charge_non_private(self._non_private, r, "personalised model without DP")
                first = strategy.resets_to_gamma and i == 0
                training = site.train(strategy, start_from_gamma=first)
                if strategy.uses_icnn:
                    site.score()
                self._record(r, Phase.FINETUNE, training, 0, evaluate=False)
                self._progress(config, r, "fine-tuned", total=config.finetune_rounds, step=i)
        self._personalise(config, state, site, strategy)
        self.final_state = state
        self.result = SiteResult(
            site=self.name,
            tier=self.data.tier,
            n_train=site.n_train,
            n_test=self.data.n_test,
            personalised=site.evaluate_personalised(),
            global_=site.evaluate_global() if strategy.aggregates else None,
            threshold=site.threshold if site.trained else None,
            dp_personalisation=(
                None if site.dp_personalisation is None else site.dp_personalisation.record()
            ),
            personalisation=self._solve_choice,
        )
        self._log_threshold(site)
        self._log_personalisation(site)
        state_dir = self.setup.state_dir
        if state_dir is not None:
            state_dir.mkdir(parents=True, exist_ok=True)
            write_records(state_dir / RESULT_FILE, self.result, self.reports)
        self._write_privacy()
        self._write_model(config, state, site)
        log.info(
            "site %s: final state of round %d received; results written",
            self.name,
            state.round_index,
        )
        return self.result

    def _personalise(
        self, config: SimulationConfig, state: GlobalState, site: Site, strategy: MethodStrategy
    ) -> None:
        """``[personalisation] epochs > 0``: a FedMAP training site's final MAP solve.

        Only where the site trains without record-level DP: a personalised model solved
        on the raw rows would not carry the DP guarantee its model file states, so a DP
        site keeps its last round's theta_k (logged). Nothing is released: the model
        stays at the site (a site whose own policy has DP off records the solve in its
        non-private ledger, as the fine-tune tier does). A site whose training rows miss
        a class keeps its last round's model too (logged): see the comment below.
        """
        p = config.personalisation
        if (
            p.epochs == 0
            or not strategy.uses_icnn
            or self.data.tier is not Tier.TRAIN
            or self.data.n_train == 0
            or not site.trained
        ):
            return
        if self.privacy is not None:
            log.warning(
                "site %s: [personalisation] not applied under record-level DP (a non-private "
                "solve would void the model's DP guarantee); the last round's model is kept",
                self.name,
            )
            return
        present = np.unique(self.data.y_train).size
        if present < self.setup.n_classes:
            # The balanced MAP solve has no decision boundary to learn from one class: its
            # likelihood only pushes the intercept toward that class (heart's Switzerland,
            # 30 positive training rows, would predict positive everywhere).
            log.warning(
                "site %s: [personalisation] not applied: its training rows hold %d of %d "
                "classes; the last round's model is kept",
                self.name,
                present,
                self.setup.n_classes,
            )
            return
        if self._non_private is not None:
            charge_non_private(
                self._non_private, state.round_index, "personalised model without DP"
            )
        training_config = p.trainer_config(config.training)
        trainer = (self.setup.plain_trainer or adam_trainer)(self.data, training_config)
        candidates = p.solve_candidates()
        chosen, self._solve_choice = (
            candidates[0],
            SolveChoice(chosen=candidates[0].token, source="configured"),
        )
        if p.select.applies(client_dp=config.client_dp.enabled):
            chosen, self._solve_choice = self._choose_solve(
                config, site, strategy, trainer, candidates
            )
        training = site.personalise(
            strategy,
            trainer,
            prior_precision=chosen.prior_precision,
            start=self._solve_start(config, chosen),
        )
        self._record(state.round_index, Phase.PERSONALISE, training, 0, evaluate=False)
        log.info(
            "site %s: personalised by the solve %s (%s; %d epochs, %d steps over %d rows)",
            self.name,
            chosen.token,
            self._solve_choice.source,
            training.epochs_run,
            training.steps,
            self.data.n_train,
        )

    def _solve_start(
        self, config: SimulationConfig, candidate: SolveCandidate
    ) -> FloatVector | None:
        """Where ``candidate`` starts: None (the final gamma) or round 0's gamma."""
        if candidate.start is SolveStart.GAMMA:
            return None
        state, _ = initial_state(
            config, n_features=len(self.setup.feature_names), n_classes=self.setup.n_classes
        )
        return state.gamma

    def _choose_solve(
        self,
        config: SimulationConfig,
        site: Site,
        strategy: MethodStrategy,
        trainer: LocalTrainer,
        candidates: tuple[SolveCandidate, ...],
    ) -> tuple[SolveCandidate, SolveChoice]:
        """``[personalisation] select = "validation"`` (``fedmap_secure.fedmap.solve_choice``):
        fit every candidate on the site's rows less a stratified held-out part, keep the
        one with the best balanced accuracy there. Nothing here leaves the site."""
        p, default = config.personalisation, candidates[0]
        x, y = self.data.x_train, self.data.y_train
        kept, held = site_holdout(config.seed, "personalisation", self.name, y, p.select_fraction)
        if held.size == 0:
            why = f"{y.size} training rows are too few to hold out a validation split"
            log.warning("site %s: personalisation solve not chosen: %s", self.name, why)
            return default, SolveChoice(chosen=default.token, source=f"configured: {why}")
        c = self.setup.n_classes
        present, fitted = np.unique(y[held]).size, np.unique(y[kept]).size
        if present < c or fitted < c:
            why = (
                f"the {held.size} held-out rows hold {present} of {c} classes"
                if present < c
                else f"the {kept.size} rows left to fit on hold {fitted} of {c} classes"
            )
            log.warning("site %s: personalisation solve not chosen: %s", self.name, why)
            return default, SolveChoice(
                chosen=default.token, source=f"configured: {why}", validation_rows=held.size
            )
        fit = (x[kept], y[kept])
        generator = make_generator(derived_seed(config.seed, f"personalisation-select/{self.name}"))
        scores: list[tuple[SolveCandidate, float]] = []
        for candidate in candidates:
            site.personalise(
                strategy,
                trainer,
                prior_precision=candidate.prior_precision,
                start=self._solve_start(config, candidate),
                rows=fit,
                generator=generator,
            )
            pred = predict_proba(site.model, x[held]).argmax(axis=1).astype(np.int64)
            scores.append((candidate, balanced_accuracy(pred, y[held])))
        chosen = pick(scores, default=default)
        return chosen, SolveChoice(
            chosen=chosen.token,
            source="validation",
            validation_rows=held.size,
            validation_ba=tuple((c.token, ba) for c, ba in scores),
        )

    # --- setup on the first announcement ---------------------------------------------------
    def prepare(self, config: SimulationConfig, *, releasing: bool = True) -> None:
        """Check the run against the site's policy and open its ledger (before any round).

        Called on the first announcement, or earlier by a transport that knows
        the configuration (in-process: every site before round 0).
        """
        if self._config is not None:
            if config != self._config:
                raise RemoteProtocolError(SERVER_ID, "the run configuration changed between rounds")
            return
        if config.features.names or config.features.schema_digest:
            check_site_schema(config.features, self.feature_schema, site=self.name)
        self._config = config
        self._strategy = make_strategy(config)
        self._hold_out_threshold_rows(config)
        if releasing:
            self._open_privacy(config)

    def _hold_out_threshold_rows(self, config: SimulationConfig) -> None:
        """``[training] threshold = "validation"``: hold out the site's threshold rows once.

        The held-out rows are never trained on (so every later step, DP calibration
        included, sees the smaller training part, whose size depends on n_k only); a
        site too small to spare them keeps argmax, logged and recorded.
        """
        training = config.training
        if training.threshold is not DecisionThreshold.VALIDATION or self.data.n_train == 0:
            return
        if self.setup.n_classes != 2:
            self._threshold_fallback = argmax_choice(
                f"{self.setup.n_classes} classes (thresholds are for binary tasks)", 0
            )
            log.warning("site %s: threshold kept at argmax: %s", self.name, "not a binary task")
            return
        kept, held = site_holdout(
            config.seed, "threshold", self.name, self.data.y_train, training.threshold_fraction
        )
        if held.size == 0:
            self._threshold_fallback = argmax_choice(
                f"{self.data.n_train} training rows are too few to hold out a validation split", 0
            )
            log.warning(
                "site %s: threshold kept at argmax (%d training rows, too few to hold out any)",
                self.name,
                self.data.n_train,
            )
            return
        x, y = self.data.x_train, self.data.y_train
        self._threshold_rows = (x[held], y[held])
        self.data = dataclasses.replace(self.data, x_train=x[kept], y_train=y[kept])
        log.info(
            "site %s: %d of %d training rows held out to choose the decision threshold",
            self.name,
            held.size,
            x.shape[0],
        )

    def _start(
        self, config: SimulationConfig, state: GlobalState, *, releasing: bool = True
    ) -> tuple[Site, MethodStrategy]:
        self.prepare(config, releasing=releasing)
        if self._site is None:
            self._site = self._build_site(config, state)
        site, strategy = self._ready()
        site.receive(state)
        return site, strategy

    def _ready(self) -> tuple[Site, MethodStrategy]:
        if self._site is None or self._strategy is None:
            raise LocalProtocolError(f"site {self.name!r}: no announcement received yet")
        return self._site, self._strategy

    def _releases(self, config: SimulationConfig) -> bool:
        """Whether this site releases anything in this run (training tier of a federated method)."""
        return (
            self.data.tier is Tier.TRAIN
            and self.data.n_train > 0
            and config.method is not Method.LOCAL
        )

    def _open_privacy(self, config: SimulationConfig) -> None:
        if not self._releases(config):
            return
        policy = self.setup.policy
        policy.check_run(self.name, config.privacy)
        effective = policy.effective(self.name, config.privacy)
        if config.method is not Method.FEDMAP:  # no score: nothing of omega is released
            effective = dataclasses.replace(effective, omega_release=OmegaRelease.UNIFORM)
        state_dir = self.setup.state_dir
        if effective.enabled:
            if state_dir is None:
                raise ConfigError(f"site {self.name!r}: DP needs a state folder for its ledger")
            self.privacy = self._site_privacy(
                config, effective, state_dir, rounds=config.rounds, note=self.setup.run_label
            )
        elif state_dir is not None and not policy.privacy.enabled:
            self._non_private = non_private_ledger(state_dir, policy.privacy, self.data.n_train)
            log.warning(
                "site %s: DP is OFF by its own policy; releases are recorded as non-private",
                self.name,
            )

    def _open_finetune_privacy(self, config: SimulationConfig) -> None:
        """A fine-tune-tier site's privacy for its fine-tuning: its OWN policy, not the run's.

        It took part in no secure round, so the run's announced ``[privacy]`` asks it
        for nothing; the run contributes only the public plan (steps per round, batch
        size, clipping bound; at most its announced epsilon for the site is spent).
        DP on in the site's policy: DP-SGD calibrated for ``finetune_rounds`` rounds
        against the site's ledger (continued across runs; no omega is released), each
        round charged before it trains. DP off in its own
        file: every fine-tuning round is recorded as a non-private release (with a
        state folder). The personalised model it writes is what this protects.
        """
        if self.privacy is not None or self._non_private is not None:
            return
        policy = self.setup.policy
        state_dir = self.setup.state_dir
        if not policy.privacy.enabled:
            if state_dir is not None:
                self._non_private = non_private_ledger(state_dir, policy.privacy, self.data.n_train)
            return
        if state_dir is None:
            raise ConfigError(
                f"site {self.name!r}: DP fine-tuning needs a state folder for its ledger"
            )
        effective = dataclasses.replace(
            policy.effective(self.name, config.privacy), omega_release=OmegaRelease.UNIFORM
        )
        self.privacy = self._site_privacy(
            config,
            effective,
            state_dir,
            rounds=config.finetune_rounds,
            note="fine-tuning" + (f"; {self.setup.run_label}" if self.setup.run_label else ""),
        )

    def _site_privacy(
        self,
        config: SimulationConfig,
        effective: PrivacyConfig,
        state_dir: Path,
        *,
        rounds: int,
        note: str,
    ) -> SitePrivacy:
        """Open the site's ledger and plan ``rounds`` rounds under ``effective``; a run
        spends at most the epsilon it announces for this site (the rest of the site's
        budget is left for later runs). Logs the plan (``note`` says what it is for)."""
        seed = derived_seed(config.seed, "dp-noise") if effective.reproducible_noise else None
        privacy = SitePrivacy.open(
            site=self.data,
            privacy=effective,
            rounds=rounds,
            state_dir=state_dir,
            noise_seed=seed,
            after_charge=self.setup.after_charge,
            note=note,
            run_epsilon=run_epsilon(config.privacy, self.name) if config.privacy.enabled else None,
        )
        plan = privacy.plan
        log.info(
            "site %s: DP-SGD%s sigma %.4g, q %.4g, %d steps x %d planned round(s); "
            "budget epsilon %.4g (spent so far %.4g)",
            self.name,
            f" ({note})" if note else "",
            plan.noise_multiplier,
            plan.sample_rate,
            plan.steps_per_round,
            plan.planned_rounds,
            plan.budget.epsilon,
            privacy.ledger.spent(),
        )
        return privacy

    def _trainer(self, config: SimulationConfig) -> LocalTrainer | None:
        if self.data.n_train == 0:
            return None
        if self.privacy is None:
            return (self.setup.plain_trainer or adam_trainer)(self.data, config.training)
        from fedmap_secure.training.dp_config import DpSgdConfig, GradSampleMode
        from fedmap_secure.training.dp_training import DpSgdMapTrainer

        plan = self.privacy.plan
        dp = DpSgdConfig.from_local_config(
            config.training,
            noise_multiplier=plan.noise_multiplier,
            max_grad_norm=plan.max_grad_norm,
            expected_batch_size=None,
            sample_rate=plan.sample_rate,
            steps=plan.steps_per_round,
            reproducible_seed=self.privacy.noise_seed,
            # torch's ExpandedWeights (the default, fastest on the built-in models) handles few
            # layers and fails on some (e.g. Conv2d before MaxPool2d): a user's module gets
            # Opacus' general per-layer hooks.
            grad_sample_mode=(
                GradSampleMode.HOOKS if config.model.kind is ModelKind.CUSTOM else GradSampleMode.EW
            ),
        )
        trainer = DpSgdMapTrainer(dp, stream_label=f"{self.name}/dp-sgd")
        planned = trainer.planned_mechanism(self.data.n_train)
        if (planned.noise_multiplier, planned.sample_rate, planned.steps) != (
            plan.noise_multiplier,
            plan.sample_rate,
            plan.steps_per_round,
        ):
            raise ConfigError(f"site {self.name!r}: trainer plan differs from the charged plan")
        return trainer

    def _build_site(self, config: SimulationConfig, state: GlobalState) -> Site:
        d, c = len(self.setup.feature_names), self.setup.n_classes
        net = build_model(config.model, n_features=d, n_classes=c, seed=0)
        load_flat_vector(net.parameters(), state.gamma)
        trainer = self._trainer(config)
        if isinstance(trainer, PreparesModel):
            net = trainer.prepare_model(net)
        gamma_net = build_model(config.model, n_features=d, n_classes=c, seed=0)
        prior = (
            ConvexPrior([int(p.numel()) for p in net.parameters()], config.prior, seed=0)
            if self._strategy is not None and self._strategy.uses_icnn
            else None
        )
        return Site(
            data=self.data,
            model=net,
            gamma_model=gamma_net,
            prior=prior,
            trainer=trainer,
            generator=make_generator(site_seed(config.seed, self.name)),
            score_config=config.score,
            n_classes=c,
            score_release=(
                exact_clipped_mean
                if self.privacy is None
                else self.privacy.score_release(self.data.n_train, config.score)
            ),
            threshold_rows=self._threshold_rows,
            threshold_fallback=self._threshold_fallback,
            # DP-SGD sites only (docs/TUNING.md, "FedMAP under record-level DP")
            personalised=(
                DpPersonalised.LAST if self.privacy is None else config.training.dp_personalised
            ),
            average_rounds=config.training.dp_average_rounds,
            reliability=self.privacy is not None and config.score.dp_reliability,
        )

    # --- the site's own records --------------------------------------------------------------
    def _record(
        self,
        round_index: int,
        phase: Phase,
        training: LocalTrainingResult | None,
        clipped: int,
        *,
        evaluate: bool,
        declined: bool = False,
    ) -> None:
        site, strategy = self._ready()
        score = site.last_score
        personalised = site.evaluate_personalised() if evaluate and training is not None else None
        report = SiteReport(
            site=self.name,
            tier=self.data.tier,
            round_index=round_index,
            phase=phase,
            training=training,
            omega=score[0] if score else None,
            prior_value=score[1] if score else None,
            clipped_coordinates=clipped,
            personalised=personalised,
            global_=site.evaluate_global() if evaluate and strategy.aggregates else None,
        )
        self.reports.append(dataclasses.replace(report, declined=declined))

    def _progress(
        self,
        config: SimulationConfig,
        round_index: int,
        outcome: str,
        *,
        total: int | None = None,
        step: int | None = None,
    ) -> None:
        budget = ""
        receipt = None if self.privacy is None else self.privacy.guard.last_receipt
        if self.privacy is not None and receipt is not None:
            budget_epsilon = self.privacy.plan.budget.epsilon
            budget = (
                f"; epsilon spent {receipt.epsilon_after:.4g} of {budget_epsilon:.4g} "
                f"(remaining {receipt.remaining:.4g})"
            )
        if total is not None and step is not None:
            log.info("site %s fine-tuning %d/%d: %s%s", self.name, step + 1, total, outcome, budget)
            return
        log.info(
            "site %s round %d/%d: %s%s", self.name, round_index + 1, config.rounds, outcome, budget
        )

    def _write_model(self, config: SimulationConfig, state: GlobalState, site: Site) -> None:
        """The personalised model of a site that trained (see the module docstring)."""
        path = self.setup.model_path
        if path is None and self.setup.state_dir is not None:
            path = self.setup.state_dir / MODEL_FILE
        if path is None or self.data.n_train == 0 or self.data.tier is Tier.UNSEEN:
            return
        schema = self.feature_schema
        meta = ModelMeta(
            model=config.model,
            n_features=len(schema),
            n_classes=self.setup.n_classes,
            schema=schema,
            round=max(state.round_index - 1, 0),
            run_id=run_id(config),
            site=self.name,
            kind=ModelFileKind.PERSONALISED,
            epsilon_spent=None if self.privacy is None else self.privacy.ledger.spent(),
            class_labels=schema.classes,
            decision_threshold=site.threshold,
        )
        self.model_file = save_model(path, model=site.personalised_model, meta=meta)
        log.info("site %s: personalised model written to %s", self.name, self.model_file)

    def _log_personalisation(self, site: Site) -> None:
        made = site.dp_personalisation
        if made is None:
            return
        how = "mean" if made.shrinkage is None else f"James-Stein factor {made.shrinkage:.3f}"
        log.info(
            "site %s: personalised model from its last %d DP-trained models (%s)",
            self.name,
            made.rounds,
            how,
        )

    def _log_threshold(self, site: Site) -> None:
        choice = site.threshold
        if choice is None or not site.trained:
            return
        if choice.chosen:
            log.info(
                "site %s: decision threshold %.3f chosen on %d validation rows "
                "(validation balanced accuracy %.3f; %.3f at argmax)",
                self.name,
                choice.value,
                choice.validation_rows,
                choice.validation_ba or 0.0,
                choice.validation_ba_argmax or 0.0,
            )
        else:
            log.warning("site %s: decision threshold kept at %s", self.name, choice.source)

    def _write_privacy(self) -> None:
        """``dp.json`` in the state folder: this site's entry of the run's privacy summary."""
        if self.privacy is None or self.setup.state_dir is None:
            return
        path = self.setup.state_dir / DP_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.privacy.describe(), indent=2, allow_nan=False), "utf-8")
        tmp.replace(path)
