"""Parameter-range watch: cheap per-update health numbers of an SB3 actor-critic.

Per update it costs one fused norm over the parameters and one no-grad forward
of at most ``sample_size`` recent observations through the policy.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch


def parameter_health(policy: Any, observations: np.ndarray | None, *, sample_size: int = 256) -> dict[str, float]:
    """Return ``param_norm``, ``pi_param_norm``, ``vf_param_norm``, ``nonfinite_params``,
    ``dead_fraction`` (share of hidden units saturated, |tanh| > 0.99, or dead, relu == 0,
    on every sampled observation) and ``logit_range`` (max - min action logit)."""
    out: dict[str, float] = {}
    with torch.no_grad():
        groups = {"param_norm": list(policy.parameters())}
        extractor = getattr(policy, "mlp_extractor", None)
        if extractor is not None:
            groups["pi_param_norm"] = list(extractor.policy_net.parameters()) + list(policy.action_net.parameters())
            groups["vf_param_norm"] = list(extractor.value_net.parameters()) + list(policy.value_net.parameters())
        for key, params in groups.items():
            norms = torch._foreach_norm([p.detach() for p in params])
            out[key] = float(torch.linalg.vector_norm(torch.stack(norms)))
        out["nonfinite_params"] = float(not np.isfinite(out["param_norm"]))
        if observations is None or extractor is None or out["nonfinite_params"]:
            return out
        obs = torch.as_tensor(observations[:sample_size], dtype=torch.float32, device=policy.device)
        features = policy.extract_features(obs, policy.pi_features_extractor)
        lstm = getattr(policy, "lstm_actor", None)
        if lstm is not None:  # a recurrent policy: each observation as a one-bar sequence from a zero state
            features = lstm(features.unsqueeze(0))[0].squeeze(0)
        dead, units, hidden = 0, 0, features
        for layer in extractor.policy_net:
            hidden = layer(hidden)
            if isinstance(layer, torch.nn.Tanh):
                dead += int((hidden.abs() > 0.99).all(dim=0).sum())
                units += hidden.shape[1]
            elif isinstance(layer, torch.nn.ReLU):
                dead += int((hidden == 0).all(dim=0).sum())
                units += hidden.shape[1]
        logits = policy.action_net(hidden)
        out["dead_fraction"] = dead / units if units else 0.0
        out["logit_range"] = float(logits.max() - logits.min())
    return out


def nonfinite_parameters(module: torch.nn.Module, *, limit: int = 3) -> list[str]:
    """Names of up to ``limit`` parameters holding NaN or inf; one fused norm when all are finite."""
    params = [p.detach() for p in module.parameters()]
    if not params or bool(torch.isfinite(torch.stack(torch._foreach_norm(params))).all()):
        return []
    bad = [name for name, p in module.named_parameters() if not bool(torch.isfinite(p).all())]
    return bad[:limit] + ([f"and {len(bad) - limit} more"] if len(bad) > limit else [])
