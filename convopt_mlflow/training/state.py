"""The SB3 side of a checkpoint: capture and restore a PPO's full training state.

Everything captured loads with ``torch.load(weights_only=True)``: tensors, numbers,
strings, and one JSON string for the extras (scheduler, monitor, env RNG, ...). Numpy
arrays inside the extras (e.g. a replay buffer's priorities) travel as tensors under
``extras_arrays`` instead of JSON lists, and come back as numpy arrays.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any, Mapping

import numpy as np
import torch

FORMAT = 1
_STATE_KEYS = ("policy", "optimizer", "num_timesteps", "n_updates", "torch_rng", "numpy_rng", "extras_json")


def _snapshot(obj: Any) -> Any:
    """Deep copy with every tensor detached and copied to CPU (so later training cannot alter it)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return (OrderedDict if type(obj) is OrderedDict else dict)((k, _snapshot(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_snapshot(v) for v in obj)
    return obj


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"extras value of type {type(value).__name__} is not JSON-serializable")


_ARRAY_KINDS = "biuf"  # bool, int, uint, float: dtypes torch.from_numpy takes (uint16+ aside, see below)


def _pull_arrays(obj: Any, arrays: dict[str, torch.Tensor]) -> Any:
    """``obj`` with every numeric numpy array replaced by ``{"__ndarray__": key}``; tensors into ``arrays``."""
    if isinstance(obj, np.ndarray) and obj.dtype.kind in _ARRAY_KINDS and obj.dtype not in (np.uint16, np.uint32, np.uint64):
        key = str(len(arrays))
        arrays[key] = torch.from_numpy(np.ascontiguousarray(obj).copy())
        return {"__ndarray__": key}
    if isinstance(obj, Mapping):
        return {k: _pull_arrays(v, arrays) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_pull_arrays(v, arrays) for v in obj]
    return obj


def _push_arrays(obj: Any, arrays: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__ndarray__"}:
            return arrays[obj["__ndarray__"]].numpy()
        return {k: _push_arrays(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_push_arrays(v, arrays) for v in obj]
    return obj


def capture_training_state(model, *, extras: Mapping[str, Any] | None = None) -> dict:
    """Snapshot an SB3 on-policy model (PPO) as a ``weights_only``-loadable dict.

    Keys: ``policy`` / ``optimizer`` (state dicts, CPU copies), ``num_timesteps``,
    ``n_updates`` (``model._n_updates``), ``torch_rng`` (uint8 tensor),
    ``torch_cuda_rng`` (list of uint8 tensors, empty without CUDA), ``numpy_rng``
    (the legacy global MT19937 state: ``key`` int64 tensor of 624 words, ``pos``,
    ``has_gauss``, ``cached_gaussian``), ``extras_json`` and ``format``.

    ``extras`` (scheduler/monitor state, env ``bit_generator.state``, ent_coef, ...)
    is stored as one JSON string; numpy scalars/arrays become Python numbers/lists.
    The env's observations and episode buffers are not captured.
    """
    _, key, pos, has_gauss, cached = np.random.get_state(legacy=True)
    arrays: dict[str, torch.Tensor] = {}
    extras = _pull_arrays(dict(extras or {}), arrays)
    return {
        "format": FORMAT,
        "policy": _snapshot(model.policy.state_dict()),
        "optimizer": _snapshot(model.policy.optimizer.state_dict()),
        "num_timesteps": int(model.num_timesteps),
        "n_updates": int(model._n_updates),
        "torch_rng": torch.get_rng_state(),
        "torch_cuda_rng": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy_rng": {"key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "extras_json": json.dumps(extras, default=_json_default, sort_keys=True),
        "extras_arrays": arrays,
    }


def restore_training_state(model, state: Mapping[str, Any]) -> dict:
    """Load a :func:`capture_training_state` dict into ``model``; return the decoded extras.

    Restores policy and optimizer state dicts (the optimizer's ``lr`` is what was
    saved, but SB3 PPO re-applies ``model.lr_schedule`` at the next update, so
    restore the schedule's own state from the extras), ``num_timesteps``,
    ``_n_updates`` and the torch / numpy global RNGs. Continue with
    ``model.learn(remaining, reset_num_timesteps=False)``.
    """
    missing = [k for k in _STATE_KEYS if k not in state]
    if missing:
        raise ValueError(f"training state lacks {missing}; was it made by capture_training_state?")
    model.policy.load_state_dict(state["policy"])
    model.policy.optimizer.load_state_dict(state["optimizer"])
    model.num_timesteps = int(state["num_timesteps"])
    model._n_updates = int(state["n_updates"])
    torch.set_rng_state(state["torch_rng"])
    cuda_rng = state.get("torch_cuda_rng") or []
    if cuda_rng and torch.cuda.is_available() and len(cuda_rng) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_rng)
    rng = state["numpy_rng"]
    np.random.set_state(("MT19937", rng["key"].numpy().astype(np.uint32), int(rng["pos"]),
                         int(rng["has_gauss"]), float(rng["cached_gaussian"])))
    return _push_arrays(json.loads(state["extras_json"]), state.get("extras_arrays") or {})
