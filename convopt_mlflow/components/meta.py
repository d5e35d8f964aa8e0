"""The meta-learning controller: online regime detection, per-regime adjustments, and a bandit per regime.

What the detector watches. A PPO agent trains on random episode windows of the train split, so
"the market now" during training is not one chronological stream. The controller therefore runs
the online detector once, bar by bar and causally, over the train split's log returns
(:meth:`MetaLearningController.detect_regime_change`): every bar gets the regime that a live
observer would have assigned it *at that bar*, from past bars only. During training the regime in
force is the most common label of the ``lookback`` bars before each env's current decision bar
(:meth:`regime_of`), i.e. the market the agent's episodes are trading through right now.

What it adapts. Every ``adaptation_frequency`` env steps the glue asks :meth:`adapt` for an
:class:`Adaptation`: multipliers of the LR, of ``ent_coef`` and of the PPO clip range, chosen by
a Thompson-sampling bandit of that regime over a small set of :data:`ADJUSTMENTS`. The bandit is
rewarded with the change of the validation score between the adaptation that chose the arm and
the next one (:meth:`learn_adaptation_strategy`); ``meta_learning_rate`` is the floor of its
step size (see :class:`~convopt_mlflow.components.bandit.ThompsonBandit`).

Stratified mode (``stratified=True``; config ``meta_stratified=true``, on in the ``regime`` preset).
The mode above picks each update's multipliers from the regime *around* the envs' current bars, which with random
episode windows is nearly always the market's most common regime: one bandit learns, the others
never choose. Stratified, the controller makes each update's data belong to one regime instead:
before each block of ``adaptation_frequency`` env steps it picks a stratum
(:data:`~convopt_mlflow.components.strata.STRATA`, by :class:`~convopt_mlflow.components.strata.BlockSchedule`),
every env draws its episode windows from that stratum's bars, and that stratum's bandit picks the
multipliers (:meth:`adapt_stratum`). At the next block the choice is rewarded with the change of
*its own stratum's* validation score (the Sharpe of the validation walk on that stratum's bars).

Why stratified rollouts and not per-env regimes with regime-weighted losses: a PPO update has one
LR, one clip range and one entropy coefficient for the whole batch, so the multipliers can belong
to a regime only if the batch does; weighting per-sample losses by regime would turn three scalar
multipliers into per-sample weights (a different optimizer, no longer "the LR of this update") and
would still mix every regime's gradient in each step. Stratifying keeps plain PPO and makes the
reward attributable: one update, one regime, one arm, one regime's score. The schedule keeps each
stratum's share of blocks at its share of train bars, so the run trains on the same mix of data.

Units: bars and env steps; multipliers are relative to the values the schedules would use
without the controller (they do not compound).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from convopt_mlflow.components.bandit import ThompsonBandit
from convopt_mlflow.components.changepoint import REGIMES, BayesianChangePointDetector, robust_scale
from convopt_mlflow.components.strata import STRATA, BlockSchedule
from convopt_mlflow.errors import ConfigError

#: adjustment name -> (LR multiplier, ent_coef multiplier, clip-range multiplier)
ADJUSTMENTS: dict[str, tuple[float, float, float]] = {
    "keep": (1.0, 1.0, 1.0),
    "lr_up": (1.5, 1.0, 1.0),
    "lr_down": (0.5, 1.0, 1.0),
    "explore": (1.0, 2.0, 1.0),
    "cautious": (0.75, 1.0, 0.75),
}


@dataclass(frozen=True)
class Adaptation:
    """One decision of the controller: the multipliers in force from ``step`` on, and why."""

    step: int
    regime: str
    arm: str
    lr: float
    ent_coef: float
    clip_range: float
    reason: str

    def multipliers(self) -> dict[str, float]:
        return {"lr": self.lr, "ent_coef": self.ent_coef, "clip_range": self.clip_range}


NEUTRAL = Adaptation(0, REGIMES[1], "keep", 1.0, 1.0, 1.0, "no adaptation yet")

_DEFAULTS: dict[str, Any] = {"meta_learning_rate": 1e-4, "adaptation_frequency": 10_000, "seed": 0,
                             "lookback": 64, "hazard": 1 / 1000, "confirm": 10, "prior_std": 1.0,
                             "stratified": False}


class MetaLearningController:
    """Regime detection + per-regime adjustment bandits (the reference design's Phase 3 controller).

    Args:
        adaptation_config: mapping with any of ``meta_learning_rate`` (bandit step-size floor, [0, 1]),
            ``adaptation_frequency`` (env steps between adaptations), ``seed`` (int), ``lookback``
            (bars behind each env's current bar that define its regime), ``hazard`` / ``confirm``
            (of the change-point detector), ``prior_std`` (reward scale before two rewards are seen)
            and ``adjustments`` (name -> (lr, ent_coef, clip_range) multipliers; default
            :data:`ADJUSTMENTS`), ``stratified`` (bool: one bandit per stratum of
            :data:`~convopt_mlflow.components.strata.STRATA`, chosen by :meth:`adapt_stratum`).

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> returns = np.r_[rng.normal(0, 1e-3, 600), rng.normal(0, 4e-3, 600)]
        >>> meta = MetaLearningController({"seed": 0, "lookback": 32})
        >>> meta.detect_regime_change(returns)
        True
        >>> meta.regime_of(np.array([300])), meta.regime_of(np.array([1100]))  # relative to the robust std of all bars
        ('low_vol', 'high_vol')
        >>> a = meta.adapt(step=10_000, regime="high_vol", score=0.1)
        >>> a.arm in ADJUSTMENTS, a.regime
        (True, 'high_vol')
    """

    def __init__(self, adaptation_config: Mapping[str, Any] | None = None):
        cfg = {**_DEFAULTS, **dict(adaptation_config or {})}
        unknown = set(cfg) - set(_DEFAULTS) - {"adjustments"}
        if unknown:
            raise ConfigError(f"meta controller: unknown adaptation_config keys {sorted(unknown)}")
        self.learning_rate = float(cfg["meta_learning_rate"])
        self.adaptation_frequency = int(cfg["adaptation_frequency"])
        self.lookback = int(cfg["lookback"])
        self.hazard, self.confirm = float(cfg["hazard"]), int(cfg["confirm"])
        self.adjustments = {k: tuple(float(x) for x in v) for k, v in dict(cfg.get("adjustments", ADJUSTMENTS)).items()}
        if not 0 <= self.learning_rate <= 1:
            raise ConfigError(f"meta controller: meta_learning_rate={self.learning_rate!r} must be in [0, 1]")
        if self.adaptation_frequency < 1 or self.lookback < 1:
            raise ConfigError("meta controller: adaptation_frequency and lookback must be >= 1")
        for name, mult in self.adjustments.items():
            if len(mult) != 3 or not all(math.isfinite(m) and m > 0 for m in mult):
                raise ConfigError(f"meta controller: adjustment {name!r}={mult!r} needs 3 multipliers > 0")
        self.rng = np.random.default_rng(int(cfg["seed"]))
        self.stratified = bool(cfg["stratified"])
        self.regimes = STRATA if self.stratified else REGIMES
        self.bandits = {regime: ThompsonBandit(list(self.adjustments), learning_rate=self.learning_rate,
                                               prior_std=float(cfg["prior_std"])) for regime in self.regimes}
        self.schedule = BlockSchedule(STRATA)
        self.last_reward: dict[str, Any] | None = None  # the newest reward given: regime, arm, reward
        self._known: dict[str, float] = {}  # newest validation score seen per stratum
        self.current = NEUTRAL
        self.pending: dict[str, Any] | None = None  # the last choice, waiting for its reward
        self.detector: BayesianChangePointDetector | None = None
        self.labels = np.zeros(0, dtype=np.int8)  # regime index per bar fed to the detector
        self.first_bar = 0
        self.change_bars: list[int] = []

    # ------------------------------------------------------------ regime detection
    def detect_regime_change(self, market_data: np.ndarray, *, first_bar: int | None = None) -> bool:
        """Feed the next bars (1-D log returns, chronological) to the online detector.

        Every bar gets the regime of the detector's current segment after that bar; returns True
        when a change was declared within ``market_data``. ``first_bar`` (the index of
        ``market_data[0]``) is set on the first call; the detector's reference scale is the robust
        std of that first batch.
        """
        returns = np.asarray(market_data, dtype=np.float64).ravel()
        if self.detector is None:
            self.first_bar = int(first_bar or 0)
            self.detector = BayesianChangePointDetector(robust_scale(returns), hazard=self.hazard,
                                                        confirm=self.confirm)
        trace = self.detector.process(returns, first_bar=self.first_bar + self.labels.size)  # the whole batch at once
        self.change_bars.extend(change.bar for change in trace.changes)
        self.labels = np.concatenate((self.labels, trace.regimes))
        return bool(trace.changes)

    def regime_of(self, bars: np.ndarray) -> str:
        """The most common regime of the ``lookback`` bars before each of ``bars`` (absolute bar indices)."""
        if self.labels.size == 0:
            return self.current.regime
        rel = np.clip(np.asarray(bars, dtype=np.int64).ravel() - self.first_bar, 0, self.labels.size - 1)
        window = np.clip(rel[:, None] - np.arange(self.lookback)[None, :], 0, self.labels.size - 1)
        counts = np.bincount(self.labels[window].ravel(), minlength=len(REGIMES))
        return REGIMES[int(np.argmax(counts))]

    # ------------------------------------------------------------ adaptation
    def adapt_hyperparameters(self, regime: str, *, step: int = 0, reason: str = "") -> Adaptation:
        """Pick an adjustment for ``regime`` with its bandit; returns (and keeps) the multipliers in force."""
        if regime not in self.bandits:
            raise ValueError(f"unknown regime {regime!r}; expected one of {', '.join(self.regimes)}")
        arm = self.bandits[regime].select(self.rng)
        lr, ent, clip = self.adjustments[arm]
        self.current = Adaptation(int(step), regime, arm, lr, ent, clip, reason or f"regime {regime}: {arm}")
        return self.current

    def learn_adaptation_strategy(self, performance_history: Sequence[Mapping[str, Any]]) -> None:
        """Reward each ``{"regime", "arm", "reward"}`` (or ``score_before``/``score_after``) in its regime's bandit."""
        for row in performance_history:
            reward = row.get("reward")
            if reward is None:
                reward = float(row["score_after"]) - float(row["score_before"])
            self.bandits[row["regime"]].update(row["arm"], float(reward))

    def adapt(self, step: int, regime: str, score: float | None) -> Adaptation:
        """One adaptation: reward the pending choice with ``score`` - its score (when both are finite),
        then choose for ``regime``. ``score`` is the newest validation score, or None if none is new."""
        reward = None
        if self.pending is not None and _finite(score) and _finite(self.pending.get("score_before")):
            reward = float(score) - float(self.pending["score_before"])
            self.learn_adaptation_strategy([{**self.pending, "reward": reward}])
        previous = self.current.regime
        why = (f"regime change {previous} -> {regime}" if regime != previous and self.pending is not None
               else f"scheduled adaptation in regime {regime}")
        if reward is not None:
            why += f"; last choice {self.pending['arm']} ({self.pending['regime']}) earned {reward:+.4g}"
        chosen = self.adapt_hyperparameters(regime, step=step, reason=why)
        before = score if _finite(score) else (self.pending or {}).get("score_before")
        self.pending = {"regime": regime, "arm": chosen.arm, "score_before": before}
        return chosen

    def adapt_stratum(self, step: int, scores: Mapping[str, float] | None, shares: Mapping[str, float]) -> Adaptation:
        """One stratified block boundary (``stratified=True``).

        Rewards the pending choice with ``scores[its stratum]`` minus that stratum's score when the
        choice was made (both finite), picks the next block's stratum (shares: stratum -> share of
        train episode starts) and lets that stratum's bandit pick the multipliers.
        ``scores``: per-stratum validation scores of the newest evaluation since the last boundary,
        or None when there was none (the pending choice then goes unrewarded).
        """
        if not self.stratified:
            raise ValueError("adapt_stratum needs a controller built with stratified=True")
        scores = dict(scores or {})
        self.last_reward = None
        pending = self.pending
        if pending is not None and _finite(scores.get(pending["regime"])) and _finite(pending.get("score_before")):
            reward = float(scores[pending["regime"]]) - float(pending["score_before"])
            self.learn_adaptation_strategy([{**pending, "reward": reward}])
            self.last_reward = {"regime": pending["regime"], "arm": pending["arm"], "reward": reward}
        regime = self.schedule.next(shares)
        why = f"block of regime {regime} (share {shares.get(regime, 0.0):.2f})"
        if self.last_reward is not None:
            got = self.last_reward
            why += f"; last choice {got['arm']} ({got['regime']}) earned {got['reward']:+.4g}"
        elif pending is not None:
            why += f"; last choice {pending['arm']} ({pending['regime']}) unrewarded (no score for it)"
        chosen = self.adapt_hyperparameters(regime, step=step, reason=why)
        before = scores.get(regime)
        if not _finite(before):  # no fresh score: the newest known one of this stratum
            before = self._known.get(regime)
        self._known.update({k: float(v) for k, v in scores.items() if _finite(v)})
        self.pending = {"regime": regime, "arm": chosen.arm, "score_before": before}
        return chosen

    def bandit_summary(self, regime: str) -> dict[str, float]:
        """``{arm}_q`` and ``{arm}_n`` of ``regime``'s bandit (for logging)."""
        bandit = self.bandits[regime]
        out = {f"{arm}_q": float(q) for arm, q in zip(bandit.arms, bandit.q)}
        out.update({f"{arm}_n": float(n) for arm, n in zip(bandit.arms, bandit.n)})
        return out

    # ------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """JSON-able: bandits, RNG, the decision in force and the one awaiting its reward.
        The per-bar labels are not kept: they are recomputed from the data on setup."""
        return {"bandits": {r: b.state_dict() for r, b in self.bandits.items()},
                "rng": self.rng.bit_generator.state, "current": asdict(self.current), "pending": self.pending,
                "schedule": self.schedule.state_dict(), "known_scores": dict(self._known)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for regime, bandit_state in state["bandits"].items():
            self.bandits[regime].load_state_dict(bandit_state)
        self.rng.bit_generator.state = state["rng"]
        self.current = Adaptation(**state["current"])
        self.pending = None if state["pending"] is None else dict(state["pending"])
        if "schedule" in state:
            self.schedule.load_state_dict(state["schedule"])
        self._known = dict(state.get("known_scores", {}))


def _finite(value: Any) -> bool:
    return value is not None and isinstance(value, (int, float, np.floating)) and math.isfinite(float(value))
