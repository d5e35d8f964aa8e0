"""MLflow "models from code" file of the convopt policy ensemble (see :mod:`.model`).

MLflow copies this file into the model directory and executes it when the model is
loaded; it must end with :func:`mlflow.models.set_model`. Do not import it: use
``mlflow.pyfunc.load_model``.

Loading reads ``policy.json``, checks the sha256 of every member file *before* reading
any of them, refuses on the first mismatch, and loads each state_dict with
``torch.load(weights_only=True)``: tensors only, no pickled Python objects.

Prediction, for bars ``0..n-1`` of the input:

- features are computed over the input alone (:func:`~convopt_mlflow.data.compute_features`
  with the stored ``vol_window``), so bar ``t`` is decidable from ``first = warmup + window - 1``;
- the walk starts flat at ``first``; at each bar ``t`` the observation holds the window
  ending at ``t`` and the position chosen at ``t - 1``; the members' action probabilities
  are averaged and ``position[t] = levels[argmax]`` (held from the close of ``t``), exactly
  the rule of :func:`~convopt_mlflow.env.deterministic_positions`, which stops one bar
  earlier because a backtest needs the next return; the last input bar is decided here;
- rows before ``first`` get ``position = 0.0``, NaN probabilities and ``ready = False``.

For speed the probabilities are computed in batches for every (bar, held position)
pair; the walk then only looks up the argmax of the pair it actually reaches.
"""
from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import torch

from convopt_mlflow.data import validate_frame
from convopt_mlflow.data.features import observation_features
from convopt_mlflow.env import MarketCore, follow_choices, policy_table
from convopt_mlflow.errors import ConfigError, DataValidationError
from convopt_mlflow.training.checkpoints import sha256_file
from convopt_mlflow.tracking.model import (
    FORMAT,
    POLICY_ARTIFACT,
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
    if description.get("format") != FORMAT:
        raise ModelIntegrityError(f"policy.json has format {description.get('format')!r}, expected {FORMAT!r}")
    if not members:
        raise ModelIntegrityError("policy.json lists no ensemble member")
    return {"members": members, "features": features, "spec": spec}


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
    ``position`` (float64), ``prob_<action>`` (float64, NaN on warm-up rows) for the
    actions ``short, flat, long`` (or ``flat, long`` when long-only) and ``ready`` (bool).
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
        self.config = description["features"]
        self.actions = action_names(bool(self.config["long_only"]))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        if not isinstance(model_input, pd.DataFrame):
            raise DataValidationError(_SOURCE, [f"expected a DataFrame of bars, got {type(model_input).__name__}"])
        frame = self._named_like_training(validate_frame(model_input, source=_SOURCE, max_gap=None))
        n = len(frame)
        positions, ready = np.zeros(n), np.zeros(n, dtype=bool)
        probs = np.full((n, len(self.actions)), np.nan)
        bars, chosen, seen = self._walk(frame)
        positions[bars], probs[bars], ready[bars] = chosen, seen, True
        out = pd.DataFrame({"position": positions}, index=model_input.index)
        for k, name in enumerate(self.actions):
            out[f"prob_{name}"] = probs[:, k]
        out["ready"] = ready
        return out

    # ------------------------------------------------------------------ internals
    def mean_probabilities(self, obs: np.ndarray) -> np.ndarray:
        """Members' mean action probabilities, float32 ``(n, n_actions)``, for float32 ``(n, obs)``."""
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(obs, dtype=np.float32))
            total = sum(policy.get_distribution(x).distribution.probs for policy in self.policies)
            return (total / len(self.policies)).numpy()

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
                                            observation=config.get("observation", "window"))
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

    def _walk(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decision bars, chosen positions and the probabilities seen at each decision."""
        core = self._core(frame)
        levels = core.position_levels
        bars = np.arange(core.first_observable_bar, len(frame))
        # table[i, h] = mean probabilities at bars[i] while holding levels[h]
        table = policy_table(core, self.mean_probabilities, bars, chunk_bars=_CHUNK_BARS)
        flat = int(np.flatnonzero(levels == 0.0)[0])  # start flat; an action index is its level's index
        actions = follow_choices(table.argmax(axis=2), flat)
        held = np.concatenate([[flat], actions[:-1]])
        seen = table[np.arange(bars.size), held].astype(np.float64)
        return bars, levels[actions], seen


mlflow.models.set_model(PolicyEnsembleModel())
