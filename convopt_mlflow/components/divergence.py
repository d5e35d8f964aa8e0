"""The divergence test of one PPO update: non-finite values, KL spike, value-loss explosion, parameters."""
from __future__ import annotations

import math
from typing import Mapping

from convopt_mlflow.components.convergence_types import MonitorThresholds
from convopt_mlflow.components.interventions import Finding
from convopt_mlflow.components.signals import ratio

#: Keys whose non-finite value is a divergence event (when present).
CORE_KEYS = ("loss", "policy_loss", "value_loss", "entropy", "approx_kl", "grad_norm", "grad_norm_mean",
             "param_norm", "logit_range")


def check_divergence(
    m: Mapping[str, float],
    th: MonitorThresholds,
    kl_median: float,
    value_loss_median: float,
    initial_param_norm: float | None,
) -> tuple[dict[str, bool], Finding | None, list[float]]:
    """Test one update's metrics ``m`` (floats, NaN allowed) for divergence.

    - non-finite: ``m["nonfinite"] > 0`` (an unreadable count counts as 1) or any
      of :data:`CORE_KEYS` present but not finite;
    - KL spike: ``approx_kl > kl_spike`` and, once ``kl_median`` is known,
      ``approx_kl > kl_spike_factor * kl_median``;
    - value-loss explosion: ``value_loss > value_loss_factor * value_loss_median``
      (only once the median is known and positive);
    - parameter alarm: ``param_norm > param_norm_factor * initial_param_norm`` or
      ``logit_range > logit_range_limit``.

    Medians are NaN while unknown. Returns ``(flags, finding or None, ratios)``
    where ``flags`` holds ``kl_spike``, ``value_loss_explosion``,
    ``param_norm_alarm`` and ``grad_nonfinite``, and ``ratios`` are each
    test's value / limit (for a graded divergence risk).

    Examples:
        >>> flags, finding, _ = check_divergence({"loss": float("nan")}, MonitorThresholds(),
        ...                                      float("nan"), float("nan"), None)
        >>> finding.signal, flags["kl_spike"]
        ('divergence', False)
    """
    get = lambda key: m.get(key, math.nan)  # noqa: E731
    bad_keys = [k for k in CORE_KEYS if k in m and not math.isfinite(m[k])]
    events = get("nonfinite")
    if "nonfinite" in m and not math.isfinite(events):
        events = 1.0
    elif not events > 0:
        events = 0.0
    kl = get("approx_kl")
    kl_relative = kl > th.kl_spike_factor * kl_median if math.isfinite(kl_median) else True
    kl_spike = math.isfinite(kl) and kl > th.kl_spike and kl_relative
    vl = get("value_loss")
    vl_limit = th.value_loss_factor * value_loss_median if value_loss_median > 0 else math.nan
    vl_explosion = math.isfinite(vl) and math.isfinite(vl_limit) and vl > vl_limit
    pn, logits = get("param_norm"), get("logit_range")
    pn_limit = th.param_norm_factor * initial_param_norm if initial_param_norm else math.nan
    param_alarm = (math.isfinite(pn) and pn > pn_limit) or (math.isfinite(logits) and logits > th.logit_range_limit)
    flags = {"kl_spike": kl_spike, "value_loss_explosion": vl_explosion, "param_norm_alarm": param_alarm,
             "grad_nonfinite": any(k in bad_keys for k in ("grad_norm", "grad_norm_mean"))}
    parts = []
    if events > 0 or bad_keys:
        parts.append(f"non-finite values ({events:g} events; keys {bad_keys})")
    if kl_spike:
        parts.append(f"KL spike {kl:.4g} > {th.kl_spike:g} (median {kl_median:.3g})")
    if vl_explosion:
        parts.append(f"value loss {vl:.4g} > {th.value_loss_factor:g} x median {value_loss_median:.4g}")
    if param_alarm:
        parts.append(f"parameter alarm: norm {pn:.4g} (limit {pn_limit:.4g}), logit range {logits:.4g}")
    finding = None
    if parts:
        values = {"nonfinite": events, "approx_kl": kl, "kl_median": kl_median, "value_loss": vl,
                  "value_loss_median": value_loss_median, "param_norm": pn, "param_norm_limit": pn_limit,
                  "logit_range": logits}
        finding = Finding("divergence", 1.0, "divergence: " + "; ".join(parts),
                          {k: float(v) for k, v in values.items() if math.isfinite(v)})
    ratios = [ratio(kl, th.kl_spike), ratio(vl, vl_limit), ratio(pn, pn_limit), ratio(logits, th.logit_range_limit)]
    return flags, finding, ratios
