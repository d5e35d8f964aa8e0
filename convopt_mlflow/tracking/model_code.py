"""MLflow "models from code" file of the convopt policy ensemble (see :mod:`.model`).

MLflow copies this file into the model directory and executes it when the model is
loaded; it must end with :func:`mlflow.models.set_model`. Do not import it: use
``mlflow.pyfunc.load_model``.

Loading reads ``policy.json``, checks the sha256 of every member file *before* reading
any of them, refuses on the first mismatch, and loads each state_dict with
``torch.load(weights_only=True)``: tensors only, no pickled Python objects. (That check
catches corrupted weights; tampering with the artifact, this file included, is caught
only by :func:`convopt_mlflow.load_model`, which checks hashes kept outside it first.)

Prediction, for bars ``0..n-1`` of the input:

- features are computed over the input alone (:func:`~convopt_mlflow.data.compute_features`
  with the stored ``vol_window``), so bar ``t`` is decidable from ``first = warmup + window - 1``;
- the walk starts flat at ``first``; at each bar ``t`` the observation holds the window
  ending at ``t`` and the position chosen at ``t - 1``; the members' action probabilities
  are combined as policy.json's ``combination`` block says
  (:func:`~convopt_mlflow.components.combine.combine_probabilities`) and
  ``position[t] = levels[action]`` (held from the close of ``t``); with one member this is
  exactly the rule of :func:`~convopt_mlflow.env.deterministic_positions`, which stops one
  bar earlier because a backtest needs the next return; the last input bar is decided here;
- rows before ``first`` get ``position = 0.0``, None probabilities and agreement (JSON
  null, so a served response stays strict JSON) and ``ready = False``.

For speed the member probabilities are computed in batches for every (bar, held
position) pair; the walk then only looks up the action of the pair it actually reaches.

A recurrent (LSTM) policy (policy.json format /3, ``spec.recurrent``) cannot be tabled: its
choice depends on its state. It is walked bar by bar over the call's rows, which must be
consecutive bars, its LSTM state starting at zero at ``first`` in every call
(:func:`convopt_mlflow.recurrent.recurrent_walk`, the walk the backtest uses).
"""
from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import torch

from convopt_mlflow.components.combine import combine_probabilities, make_combination
from convopt_mlflow.data import validate_frame
from convopt_mlflow.data.features import (
    observation_features, uses_context_ewm, uses_context_features, uses_context_momentum, uses_regime_features,
)
from convopt_mlflow.env import MarketCore, follow_choices, policy_table
from convopt_mlflow.errors import ConfigError, DataValidationError
from convopt_mlflow.hashing import sha256_file
from convopt_mlflow.recurrent import recurrent_walk
from convopt_mlflow.tracking.model import (
    POLICY_ARTIFACT,
    READABLE_FORMATS,
    ModelIntegrityError,
    action_names,
    build_policy,
)

_SOURCE = "model input"
_CHUNK_BARS = 4096


def _read_description(artifacts: dict[str, str]) -> dict:
    path = artifacts.get(POLICY_ARTIFACT)
    if path is None:
        raise ModelIntegrityError(f"the model has no {POLICY_ARTIFACT!r} artifact (policy.json)")
    try:
        with open(path, encoding="utf-8") as handle:
            description = json.load(handle)
        members, features = description["members"], description["features"]
        spec = description["spec"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelIntegrityError(f"cannot read the policy description {path}: {exc!r}") from None
    if description.get("format") not in READABLE_FORMATS:
        raise ModelIntegrityError(f"policy.json has format {description.get('format')!r}, "
                                  f"expected one of {READABLE_FORMATS}")
    if not members:
        raise ModelIntegrityError("policy.json lists no ensemble member")
    block = description.get("combination") or {}  # absent in format /1: mean_prob
    try:
        combination = make_combination(len(members), block.get("method", "mean_prob"), block.get("weights"))
    except (ConfigError, AttributeError) as exc:
        raise ModelIntegrityError(f"policy.json has a bad combination block {block!r}: {exc}") from None
    return {"members": members, "features": features, "spec": spec, "combination": combination}


def _verified_member_paths(artifacts: dict[str, str], members: list[dict]) -> list[str]:
    """Each member's local path, after checking its sha256 against policy.json."""
    paths = []
    for member in members:
        name, expected = member.get("artifact"), member.get("sha256")
        path = artifacts.get(name) if isinstance(name, str) else None
        if path is None or not isinstance(expected, str):
            raise ModelIntegrityError(f"policy.json member entry {member!r} names no artifact of this model")
        actual = sha256_file(path)
        if actual != expected:
            raise ModelIntegrityError(
                f"sha256 mismatch for ensemble member {member.get('file', name)!r}: policy.json records "
                f"{expected}, the file has {actual}. Refusing to load a modified or corrupted model."
            )
        paths.append(path)
    return paths


class PolicyEnsembleModel(mlflow.pyfunc.PythonModel):
    """Pyfunc of an ensemble of SB3 actor-critic policies trading one market.

    ``predict(context, bars) -> DataFrame`` with one row per input row (same index):
    ``position`` (float64), ``prob_<action>`` for the actions ``short, flat, long`` (or
    ``flat, long`` when long-only), ``agreement`` and ``ready`` (bool). Probabilities and
    agreement are floats on ready rows and None on warm-up rows (object columns), so that
    a served response holds ``null`` there, never the non-JSON ``NaN``.
    """

    def load_context(self, context) -> None:
        artifacts = dict(context.artifacts)
        description = _read_description(artifacts)
        paths = _verified_member_paths(artifacts, description["members"])
        policies = []
        for path in paths:
            state = torch.load(path, weights_only=True, map_location="cpu")
            policy = build_policy(description["spec"])
            try:
                policy.load_state_dict(state)
            except (RuntimeError, TypeError, AttributeError) as exc:
                raise ModelIntegrityError(f"member {path} does not fit the stored policy spec: {exc}") from None
            policies.append(policy)
        self.policies = tuple(policies)
        self.recurrent = "recurrent" in description["spec"]
        self.combination = description["combination"]
        self.config = description["features"]
        self.actions = action_names(bool(self.config["long_only"]))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        if not isinstance(model_input, pd.DataFrame):
            raise DataValidationError(_SOURCE, [f"expected a DataFrame of bars, got {type(model_input).__name__}"])
        frame = self._named_like_training(validate_frame(model_input, source=_SOURCE, max_gap=None))
        n = len(frame)
        positions, ready = np.zeros(n), np.zeros(n, dtype=bool)
        probs, agreement = np.full((n, len(self.actions)), np.nan), np.full(n, np.nan)
        bars, chosen, seen, agreed = self._walk(frame)
        positions[bars], probs[bars], agreement[bars], ready[bars] = chosen, seen, agreed, True
        out = pd.DataFrame({"position": positions}, index=model_input.index)
        for k, name in enumerate(self.actions):
            out[f"prob_{name}"] = _nullable(probs[:, k], ready)
        out["agreement"] = _nullable(agreement, ready)
        out["ready"] = ready
        return out

    # ------------------------------------------------------------------ internals
    def member_probabilities(self, obs: np.ndarray) -> np.ndarray:
        """Each member's action probabilities, float32 ``(n, members, n_actions)``, for float32 ``(n, obs)``."""
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(obs, dtype=np.float32))
            return torch.stack([policy.get_distribution(x).distribution.probs for policy in self.policies], 1).numpy()

    def _named_like_training(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Spell ``feat_*`` columns as in training ("FEAT_Signal" -> "feat_signal")."""
        trained = {name.lower(): name for name in self.config["feature_names"] if name.lower().startswith("feat_")}
        renames = {c: trained[c.lower()] for c in frame.columns if c.lower() in trained and c != trained[c.lower()]}
        if not renames:
            return frame
        targets = [renames.get(c, c) for c in frame.columns]
        clashes = sorted({t for t in targets if targets.count(t) > 1})
        if clashes:
            raise DataValidationError(_SOURCE, [f"ambiguous feature columns {clashes} (names differ only in case)"])
        return frame.rename(columns=renames)

    def _core(self, frame: pd.DataFrame) -> MarketCore:
        config, history = self.config, int(self.config["window"])
        try:  # models saved before observation forms existed observed raw windows
            observed = observation_features(frame, vol_window=int(config["vol_window"]), history=history,
                                            observation=config.get("observation", "window"),
                                            regime_features=uses_regime_features(config["feature_names"]),
                                            context_features=uses_context_features(config["feature_names"]),
                                            context_momentum=uses_context_momentum(config["feature_names"]),
                                            context_ewm=uses_context_ewm(config["feature_names"]))
        except ConfigError as exc:
            raise DataValidationError(_SOURCE, [str(exc)]) from None
        features, window = observed.features, observed.window
        if observed.base_names != list(config["feature_names"]):
            raise DataValidationError(_SOURCE, [
                f"the input yields features {features.names}, but the policy was trained on "
                f"{config['feature_names']}: supply the same columns (volume, feat_*)"
            ])
        need = features.warmup + window
        if len(frame) < need:
            raise DataValidationError(_SOURCE, [
                f"too few bars: a decision needs at least {need} (feature warm-up and {history} bars "
                f"of history), got {len(frame)}"
            ])
        # One padding bar after the input lets the core accept a decision at the last input
        # bar (it insists on a next return); the padding is never observed.
        values = np.concatenate([features.values, features.values[-1:]])
        returns = np.append(features.log_returns, 0.0)
        return MarketCore(values, returns, window=window, episode_length=1, cost_bps=float(config["cost_bps"]),
                          long_only=bool(config["long_only"]), warmup=features.warmup)

    def _walk(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Decision bars, chosen positions, and the probabilities and agreement seen at each decision."""
        core = self._core(frame)
        levels = core.position_levels
        bars = np.arange(core.first_observable_bar, len(frame))
        if self.recurrent:  # bar by bar, the LSTM states carried from the first decidable row
            kept: list = []

            def choose(member_probs):
                kept.append(self._combined(member_probs[None]))
                return int(kept[-1][0][0])

            actions, _ = recurrent_walk(core, list(self.policies), bars, choose)
            seen = np.concatenate([k[1] for k in kept]) if kept else np.empty((0, levels.size))
            agreed = np.concatenate([k[2] for k in kept]) if kept else np.empty(0)
            return bars, levels[actions], seen, agreed
        # table[i, h, m] = member m's probabilities at bars[i] while holding levels[h]
        table = policy_table(core, self.member_probabilities, bars, chunk_bars=_CHUNK_BARS)
        n_pairs = bars.size * levels.size
        choices, probs, agreement = self._combined(table.reshape(n_pairs, *table.shape[2:]))
        flat = int(np.flatnonzero(levels == 0.0)[0])  # start flat; an action index is its level's index
        actions = follow_choices(choices.reshape(bars.size, levels.size), flat)
        pair = np.arange(bars.size) * levels.size + np.concatenate([[flat], actions[:-1]])
        return bars, levels[actions], probs[pair], agreement[pair]

    def _combined(self, member_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """combine_probabilities of ``(n, members, n_actions)`` member probabilities."""
        return combine_probabilities(member_probs.transpose(1, 0, 2), **self.combination)


def _nullable(values: np.ndarray, ready: np.ndarray) -> np.ndarray:
    """Floats where ``ready``, None elsewhere (an object array: pandas keeps None as None)."""
    out = np.full(values.shape, None, dtype=object)
    out[ready] = values[ready].tolist()
    return out


mlflow.models.set_model(PolicyEnsembleModel())
