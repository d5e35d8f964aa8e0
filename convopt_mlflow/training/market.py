"""The market a run trains and is judged on: bars, features, chronological splits and one env core per
split, with the synthetic market's oracle and regimes. No torch and no SB3 here, so a process that only
needs the market and its runs (an ensemble's parent, before it hands its members to the workers) does not
import them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from ..config import OptimizedTrainingConfig
from ..data import Bars, Features, Splits, chronological_splits
from ..data.features import observation_features, plain_observation_warmup
from ..data.loading import SYNTHETIC_PREFIX, generated_market, parse_synthetic_spec
from ..data.splits import split_boundaries
from ..data.synthetic import UNIFORM_LOADINGS
from ..env.core import MarketCore
from ..evaluation.true_oracle import causal_positions, discrete_states, solve_chain_plan, solve_plan
from .data_source import read_bars
from .oracle_cache import cached_plan

__all__ = ["Market", "load_market", "next_log_returns", "shared_market", "split_record"]


@dataclass(frozen=True)
class Market:
    """Loaded bars, the features the env observes, the chronological splits and one env core per split."""

    bars: Bars
    features: Features
    splits: Splits
    cores: dict[str, MarketCore]
    base_feature_names: list[str]
    """The per-bar features the observation is built from (what a model's input must yield)."""

    @cached_property
    def planted_signal(self) -> np.ndarray | None:
        """What the oracle trades on (float64, per bar) in a synthetic market, else None.

        The planted signal ``z[t]``; in a market with ``signal_regimes`` its loading in the
        regime of bar t times ``z[t]`` (the oracle knows the regime, the agent does not). The
        market is regenerated from its spec (deterministic) to read the regimes.
        """
        frame = self.bars.frame
        if self.bars.name != SYNTHETIC_PREFIX or "feat_signal" not in frame.columns:
            return None
        if parse_synthetic_spec(self.bars.source)["signal_regimes"] != UNIFORM_LOADINGS:
            return self._generated.effective_signal
        return frame["feat_signal"].to_numpy(dtype=np.float64)

    @cached_property
    def oracle_plan(self) -> Any:
        """The true oracle's solved plan for this market's dynamics and cost (None on real data)."""
        if self.bars.name != SYNTHETIC_PREFIX:
            return None
        core = self.cores["train"]
        if self._generated.chain is not None:  # a panel mechanism (data/panel.py): its finite chain
            return solve_chain_plan(self._generated.chain, cost=core.cost_rate,
                                    levels=tuple(core.position_levels.tolist()))
        levels = tuple(core.position_levels.tolist())
        return cached_plan(lambda: solve_plan(self._generated.dynamics, cost=core.cost_rate, levels=levels),
                           inputs=(self._generated.dynamics, core.cost_rate, levels))

    def oracle_positions(self, bars: np.ndarray) -> np.ndarray | None:
        """The true oracle's positions on consecutive decision ``bars`` (starting flat); None on real data."""
        plan = self.oracle_plan
        if plan is None:
            return None
        truth = self._generated
        states = (truth.states[bars] if truth.chain is not None
                  else discrete_states(truth.regimes[bars], truth.trend_direction[bars]))
        return causal_positions(truth.expected_next_return[bars], states,
                                None if truth.signal is None else truth.signal[bars], plan, cost=self.cores["train"].cost_rate)

    @cached_property
    def regimes(self) -> np.ndarray | None:
        """The regime of each bar (int8: 0 trend, 1 mean reversion, 2 high vol) of a synthetic regime market,
        else None (real data and the panel mechanisms, which have no regimes)."""
        return self._generated.regimes if self.bars.name == SYNTHETIC_PREFIX else None

    @cached_property
    def _generated(self):
        """The synthetic market regenerated from its spec (deterministic): what the bars do not show."""
        return generated_market(parse_synthetic_spec(self.bars.source))


def load_market(cfg: OptimizedTrainingConfig, bars: Bars | None = None) -> Market:
    if bars is None:
        bars = read_bars(cfg)
    observed = observation_features(bars.frame, vol_window=cfg.data.vol_window,
                                    observation=cfg.env.observation, history=cfg.env.window,
                                    regime_features=cfg.env.regime_features,
                                    context_features=cfg.env.context_features,
                                    context_momentum=cfg.env.context_momentum,
                                    context_ewm=cfg.env.context_ewm)
    features = observed.features
    # split from the plain observation's warm-up, so the optional sets (regime_*, ctx_*) leave val and
    # test on the same bars as an arm without them; the train split starts where every feature is valid
    plain = plain_observation_warmup(cfg.data.vol_window, observation=cfg.env.observation, history=cfg.env.window)
    splits = chronological_splits(bars.n_bars, val_fraction=cfg.data.val_fraction,
                                  test_fraction=cfg.data.test_fraction,
                                  holdout_fraction=cfg.data.holdout_fraction, embargo_bars=cfg.data.embargo_bars,
                                  start=min(plain, features.warmup))
    if splits.train[0] < features.warmup:
        splits = dataclasses.replace(splits, train=(features.warmup, splits.train[1]))
    cores = {}
    for name in ("train", "val", "test"):  # no core for the holdout: only `convopt promote` walks it
        # only training needs whole episodes; val/test are walked bar by bar
        episode = cfg.env.episode_length if name == "train" else 1
        cores[name] = MarketCore(features.values, features.log_returns, window=observed.window,
                                 episode_length=episode, cost_bps=cfg.env.cost_bps, long_only=cfg.env.long_only,
                                 bar_range=getattr(splits, name), warmup=features.warmup)
    return Market(bars, features, splits, cores, observed.base_names)


#: (bars digest, the data and env settings as JSON) -> the market this process built from them
_SHARED: dict[tuple[str, str], Market] = {}
_SHARED_KEPT = 2


def shared_market(cfg: OptimizedTrainingConfig, digest: str = "") -> tuple[Market, bool]:
    """``cfg``'s market, from this process's cache when one was built here from the same bars (by
    their digest) and the same ``data.*`` and ``env.*`` settings; ``(market, hit)``.

    What a long-lived worker runs one after another (ensemble members, A/B trials) shares its data,
    so the features and env cores are built once per worker. The bars are read every time unless
    ``digest`` is given (an ensemble member gets its run's): the key is the digest of what was
    read, so a data file changed in between is a miss, never a stale market. A market is
    read-only to training (its cores' arrays are write-protected views). At most
    :data:`_SHARED_KEPT` markets are kept, the oldest dropped first.
    """
    import json
    from dataclasses import asdict

    settings = json.dumps([asdict(cfg.data), asdict(cfg.env)], sort_keys=True, default=str)
    if digest and (digest, settings) in _SHARED:
        return _SHARED[(digest, settings)], True
    bars = read_bars(cfg)
    key = (bars.digest, settings)
    if key in _SHARED:
        return _SHARED[key], True
    market = load_market(cfg, bars=bars)
    _SHARED[key] = market
    while len(_SHARED) > _SHARED_KEPT:
        _SHARED.pop(next(iter(_SHARED)))
    return market, False


def split_record(cfg: OptimizedTrainingConfig, market: Market) -> dict[str, Any]:
    """The run's split boundaries (bar indices and timestamps) and data digest, as every run records them."""
    return split_boundaries(market.splits, market.bars.frame.index, embargo_bars=cfg.data.embargo_bars,
                            digest=market.bars.digest)


def next_log_returns(market: Market, bars: np.ndarray) -> np.ndarray:
    """Return realised after each decision bar: log_returns[t + 1]."""
    return market.features.log_returns[bars + 1]
