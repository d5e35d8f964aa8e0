"""The ensemble policy as an MLflow pyfunc model, built with MLflow's "models from code".

Nothing pickled by Python is ever loaded. The model directory holds:

- ``artifacts/member_{i}.pt``: one SB3 ``ActorCriticPolicy`` state_dict per ensemble
  member, written with ``torch.save`` and read back with ``torch.load(weights_only=True)``;
- ``artifacts/policy.json``: the network spec, the feature config, the action names, the
  ``combination`` block (:mod:`convopt_mlflow.components.combine`) and the sha256 of every
  member file (loading refuses a member file whose hash differs);
- ``model_code.py``: the inference code (:mod:`convopt_mlflow.tracking.model_code`),
  executed at load time; it imports the installed ``convopt_mlflow`` package, which the
  model's requirements pin (``convopt-mlflow==<version>``).

policy.json protects against corrupted weights only: whoever can edit the artifact can
edit policy.json and model_code.py too. :func:`log_policy_model` therefore also records
the sha256 of every file of the artifact outside it, in a run tag
(:mod:`.integrity`), which :func:`convopt_mlflow.load_model` checks before anything of
the artifact is executed.

Input: OHLC(V) bars, one row per bar (timestamps in a ``timestamp`` column or in a
``DatetimeIndex``; plus the ``feat_*`` columns the policy was trained with). Output, one
row per input row: ``position`` (the position to hold after the bar's close), one
``prob_<action>`` column per action (the members' combined action probabilities),
``agreement`` (the weight of the members whose own choice is ``position``) and ``ready``
(False on warm-up bars that have no full observation window yet; their probabilities and
agreement are None, which serves as JSON null).

Example (a PPO that never trained, on a synthetic market; ``MLFLOW_TRACKING_URI`` names the store):
    >>> from stable_baselines3 import PPO
    >>> from convopt_mlflow.data import compute_features, generate_market
    >>> from convopt_mlflow.env import MarketCore, TradingVecEnv
    >>> bars = generate_market(200, seed=0).frame
    >>> features = compute_features(bars, vol_window=4)
    >>> core = MarketCore(features.values, features.log_returns, window=4, episode_length=32,
    ...                   cost_bps=1.0, warmup=features.warmup)
    >>> ppo = PPO("MlpPolicy", TradingVecEnv(core, n_envs=1, seed=0), policy_kwargs={"net_arch": [8]}, device="cpu")
    >>> run_id = MlflowClient().create_run("0").info.run_id
    >>> uri = log_policy_model(run_id, members=[ppo.policy.state_dict()], spec=policy_spec(ppo),
    ...     feature_config={"window": 4, "observation": "window", "vol_window": 4, "cost_bps": 1.0,
    ...                     "long_only": False, "feature_names": features.names},
    ...     input_example=bars.iloc[:40])
    >>> decisions = mlflow.pyfunc.load_model(uri).predict(bars)
    >>> list(decisions.columns), len(decisions) == len(bars)
    (['position', 'prob_short', 'prob_flat', 'prob_long', 'agreement', 'ready'], True)
"""
from __future__ import annotations

import collections
import json
import os
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Mapping, Sequence

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.entities import LoggedModelStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature, infer_signature
from mlflow.tracking import MlflowClient
from mlflow.tracking.context.registry import resolve_tags
from mlflow.types.schema import ColSpec, Schema

from convopt_mlflow.components.combine import make_combination
from convopt_mlflow.data import compute_features, validate_frame
from convopt_mlflow.data.features import (
    OBSERVATIONS,
    observation_size,
    uses_context_ewm,
    uses_context_features,
    uses_context_momentum,
    uses_regime_features,
)
from convopt_mlflow.errors import ConfigError, RunNotFoundError
from convopt_mlflow.tracking._requirements import requirements_pinned_here
from convopt_mlflow.tracking.integrity import (
    ModelIntegrityError,
    artifact_hashes,
    encode_hashes,
    file_sha256,
    hashes_tag,
)
from convopt_mlflow.tracking.policy import action_names, build_policy, policy_spec
from convopt_mlflow.tracking.runs import quiet_artifact_transfers

__all__ = [
    "FORMAT",
    "MODEL_CODE_PATH",
    "POLICY_FILE",
    "READABLE_FORMATS",
    "ModelIntegrityError",
    "action_names",
    "build_policy",
    "log_policy_model",
    "policy_spec",
    "save_policy_model",
]

#: The models-from-code file MLflow copies into the model and executes at load time.
MODEL_CODE_PATH = Path(__file__).with_name("model_code.py")
POLICY_FILE = "policy.json"
POLICY_ARTIFACT = "policy"
#: policy.json format; /1 (no combination block) loads as mean_prob with equal weights.
FORMAT = "convopt-policy-ensemble/2"
#: policy.json format of a recurrent (LSTM) policy: its spec has a ``recurrent`` block (convopt_mlflow/recurrent.py)
FORMAT_RECURRENT = "convopt-policy-ensemble/3"
READABLE_FORMATS = ("convopt-policy-ensemble/1", FORMAT, FORMAT_RECURRENT)
FEATURE_KEYS = ("window", "observation", "vol_window", "cost_bps", "long_only", "feature_names")
_REQUIREMENTS = ("torch", "stable-baselines3", "gymnasium", "numpy", "pandas", "convopt-mlflow")


# ------------------------------------------------------------------- saving
def _check_feature_config(feature_config: Mapping[str, Any], spec: Mapping[str, Any]) -> dict:
    missing = [k for k in FEATURE_KEYS if k not in feature_config]
    extra = sorted(set(feature_config) - set(FEATURE_KEYS))
    if missing or extra:
        raise ConfigError(f"feature_config needs exactly {list(FEATURE_KEYS)}; missing {missing}, unknown {extra}")
    config = {
        "window": int(feature_config["window"]),
        "observation": str(feature_config["observation"]),
        "vol_window": int(feature_config["vol_window"]),
        "cost_bps": float(feature_config["cost_bps"]),
        "long_only": bool(feature_config["long_only"]),
        "feature_names": [str(n) for n in feature_config["feature_names"]],
    }
    if config["observation"] not in OBSERVATIONS:
        raise ConfigError(f"observation must be one of {OBSERVATIONS}, got {config['observation']!r}")
    obs_size = observation_size(len(config["feature_names"]), observation=config["observation"],
                                history=config["window"])
    if obs_size != spec["obs_size"]:
        raise ConfigError(
            f"a {config['observation']} observation of {config['window']} bars of {len(config['feature_names'])} "
            f"features holds {obs_size} values, but the policy observes {spec['obs_size']}"
        )
    if len(action_names(config["long_only"])) != spec["n_actions"]:
        raise ConfigError(f"long_only={config['long_only']} does not match the policy's {spec['n_actions']} actions")
    return config


def _combination(n_members: int, combination: Mapping[str, Any] | None) -> dict:
    block = dict(combination or {})
    unknown = sorted(set(block) - {"method", "weights"})
    if unknown:
        raise ConfigError(f"unknown ensemble combination keys {unknown}; use 'method' and 'weights'")
    return make_combination(n_members, block.get("method", "mean_prob"), block.get("weights"))


def _stage(folder: Path, members: Sequence[Mapping[str, torch.Tensor]], spec: Mapping[str, Any],
           feature_config: Mapping[str, Any], combination: Mapping[str, Any] | None) -> tuple[dict[str, str], dict]:
    """Write member_{i}.pt and policy.json into ``folder``; return the artifacts map and the config."""
    if len(members) == 0:
        raise ConfigError("an ensemble needs at least one member")
    spec = _spec_copy(spec)
    config = _check_feature_config(feature_config, spec)
    combination = _combination(len(members), combination)
    artifacts, entries = {}, []
    for i, member in enumerate(members):
        state = collections.OrderedDict((k, v.detach().to("cpu").clone()) for k, v in member.items())
        build_policy(spec).load_state_dict(state)  # strict: refuses a member that does not fit the spec
        path = folder / f"member_{i}.pt"
        torch.save(state, path)
        artifacts[f"member_{i}"] = str(path)
        entries.append({"artifact": f"member_{i}", "file": path.name, "sha256": file_sha256(path)})
    description = {
        "format": FORMAT_RECURRENT if "recurrent" in spec else FORMAT,
        "spec": spec,
        "features": config,
        "actions": list(action_names(config["long_only"])),
        "combination": combination,
        "members": entries,
    }
    policy_path = folder / POLICY_FILE
    policy_path.write_text(json.dumps(description, indent=2, sort_keys=True))
    artifacts[POLICY_ARTIFACT] = str(policy_path)
    return artifacts, config


def _spec_copy(spec: Mapping[str, Any]) -> dict:
    """A JSON-round-tripped copy of a spec, validated by building it once."""
    copy = json.loads(json.dumps(dict(spec)))
    build_policy(copy)
    return copy


def _feature_names(frame: pd.DataFrame, config: Mapping[str, Any]) -> list[str]:
    features = compute_features(frame, vol_window=config["vol_window"],
                                regime_features=uses_regime_features(config["feature_names"]),
                                context_features=uses_context_features(config["feature_names"]),
                                context_momentum=uses_context_momentum(config["feature_names"]),
                                context_ewm=uses_context_ewm(config["feature_names"]))
    need = features.warmup + config["window"]
    if len(frame) < need:
        raise ConfigError(f"the input example needs at least {need} bars to show a decision, got {len(frame)}")
    return list(features.names)


def _example_and_signature(input_example: pd.DataFrame, config: Mapping[str, Any]) -> tuple[pd.DataFrame, ModelSignature]:
    """The canonical input example (``timestamp`` column, lower-case OHLCV) and the signature.

    The example must yield exactly the training features: MLflow drops input columns the
    signature does not name, so a feat_* column missing here could never reach the model.
    """
    frame = validate_frame(input_example, source="input example", max_gap=None)
    names = _feature_names(frame, config)
    if names != config["feature_names"]:
        raise ConfigError(f"the input example yields features {names}, but the policy uses {config['feature_names']}")
    optional = {"timestamp"}  # the timestamps may come as the DatetimeIndex instead
    if "volume" in frame.columns and _feature_names(frame.drop(columns="volume"), config) == names:
        optional.add("volume")  # no feature reads it
    example = frame.reset_index()  # the DatetimeIndex "timestamp" becomes a column
    actions = action_names(config["long_only"])
    output = pd.DataFrame({"position": [0.0, 1.0]})
    for k, name in enumerate(actions):
        output[f"prob_{name}"] = [np.nan, float(k == len(actions) - 1)]
    output["agreement"] = [np.nan, 1.0]
    output["ready"] = [False, True]
    inferred = infer_signature(example, output)
    inputs = Schema([ColSpec(c.type, c.name, required=c.name not in optional) for c in inferred.inputs.inputs])
    outputs = Schema([ColSpec(c.type, c.name) for c in inferred.outputs.inputs])  # every column, every row
    return example, ModelSignature(inputs=inputs, outputs=outputs)


def _pip_requirements(recurrent: bool = False) -> list[str]:
    reqs = []
    for name in _REQUIREMENTS + (("sb3-contrib",) if recurrent else ()):
        try:
            reqs.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            reqs.append(name)
    return reqs


def _flavor_kwargs(folder: Path, members, spec, feature_config, input_example, combination) -> dict[str, Any]:
    artifacts, config = _stage(folder, members, spec, feature_config, combination)
    example, signature = _example_and_signature(input_example, config)
    return {
        "python_model": str(MODEL_CODE_PATH),
        "artifacts": artifacts,
        "signature": signature,
        "input_example": example,
        "pip_requirements": _pip_requirements("recurrent" in spec),  # explicit: inferring them costs a subprocess
        # the MLmodel file names the policy kind (and a recurrent policy's state size) too
        "metadata": {"convopt_policy": {"kind": "recurrent-lstm", **spec["recurrent"]} if "recurrent" in spec
                     else {"kind": "mlp"}},
    }


def save_policy_model(
    path: str | os.PathLike,
    *,
    members: Sequence[Mapping[str, torch.Tensor]],
    spec: dict,
    feature_config: dict,
    input_example: pd.DataFrame,
    combination: Mapping[str, Any] | None = None,
) -> None:
    """Save the ensemble as an MLflow pyfunc model directory at ``path`` (must not exist or be empty).

    Args:
        members: one policy state_dict per ensemble member (e.g. ``ppo.policy.state_dict()``).
        spec: :func:`policy_spec` of the members (all members share it).
        feature_config: exactly ``window`` (bars per observation), ``vol_window`` (bars),
            ``cost_bps``, ``long_only`` and ``feature_names`` (``Features.names`` of training).
        input_example: OHLCV bars (DatetimeIndex or timestamp column, plus the feat_*
            columns of training), at least feature warm-up + ``window`` bars long, so that
            it yields the training features and shows one decision.
        combination: ``{"method": "mean_prob" | "majority_vote" | "weighted", "weights":
            [one per member, summing to 1]}`` (see :mod:`convopt_mlflow.components.combine`);
            None, or a missing key, means ``mean_prob`` with equal weights.

    Raises:
        ConfigError: empty ensemble, a bad combination, a feature config that does not fit
            the spec, or an input example too short or yielding other features.
        DataValidationError: an input example that is not valid bars.
    """
    with tempfile.TemporaryDirectory(prefix="convopt-model-") as tmp:
        kwargs = _flavor_kwargs(Path(tmp), members, spec, feature_config, input_example, combination)
        mlflow.pyfunc.save_model(os.fspath(path), **kwargs)


def log_policy_model(
    run_id: str,
    *,
    members: Sequence[Mapping[str, torch.Tensor]],
    spec: dict,
    feature_config: dict,
    input_example: pd.DataFrame,
    name: str = "model",
    step: int = 0,
    combination: Mapping[str, Any] | None = None,
) -> str:
    """Log the ensemble into the existing run ``run_id``; return the model URI (``models:/<id>``).

    The run's status is left as it is and no fluent active run is started: the run's
    owner ends it. The model is an MLflow 3 LoggedModel in the run's experiment, linked
    to the run as an output at ``step`` (an env timestep), so it also loads as
    ``runs:/<run_id>/<name>``. Arguments as in :func:`save_policy_model`.

    The sha256 of every file of the stored artifact is recorded in the run tag
    ``convopt.model_files_sha256`` (``convopt.model_files_sha256.<name>`` for another
    ``name``); see :mod:`.integrity`.

    Raises:
        RunNotFoundError: no run ``run_id`` in the current tracking store.
    """
    client = MlflowClient()
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise RunNotFoundError(f"cannot log the model: run {run_id!r} not found ({exc.message})") from None
    with tempfile.TemporaryDirectory(prefix="convopt-model-") as tmp:
        kwargs = _flavor_kwargs(Path(tmp), members, spec, feature_config, input_example, combination)
        # Created here rather than by Model.log: without an active run, Model.log would put
        # the LoggedModel in the default experiment, where runs:/ URIs cannot find it.
        logged = client.create_logged_model(
            experiment_id=run.info.experiment_id,
            name=name,
            source_run_id=run_id,
            params=dict(run.data.params),
            tags=resolve_tags({}),
        )
        # no "Downloading artifacts" bars after the run's own output; no scan of every installed package
        with quiet_artifact_transfers(), requirements_pinned_here():
            info = Model.log(
                artifact_path=None,
                name=name,
                flavor=mlflow.pyfunc,
                run_id=run_id,
                model_id=logged.model_id,
                step=int(step),
                **kwargs,
            )
            # Hash what the artifact store now holds, byte for byte as a later download sees it
            # (from its location: a models:/ download adds a local registered_model_meta file).
            stored = mlflow.artifacts.download_artifacts(artifact_uri=logged.artifact_location,
                                                         dst_path=str(Path(tmp, "stored")))
        tags = encode_hashes(hashes_tag(name), logged.model_id, artifact_hashes(stored))
        client.log_batch(run_id, tags=[RunTag(key, value) for key, value in tags.items()])
        # Model.log leaves a model it did not create PENDING; READY marks it complete (and hashed),
        # so a resume after a kill can tell a finished model from a half-written one.
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    return info.model_uri
