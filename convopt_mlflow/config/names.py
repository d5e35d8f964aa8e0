"""Short, readable names for runs and arms that differ from their preset.

A run's name shows its preset, what it changed, and its seed: ``baseline[lr=0.0001]-s0``.
The full config is in the run's params and ``config.json``; the name only has to tell
runs apart at a glance and stay on one line.

Example:
    >>> overrides_label({"base_learning_rate": "1e-4", "ppo.batch_size": "512"})
    'lr=0.0001,batch_size=512'
    >>> preset_label("baseline", {"run.total_timesteps": "60000"})
    'baseline[steps=60k]'
"""
from __future__ import annotations

import hashlib
from typing import Any, Mapping

__all__ = ["MAX_LABEL_CHARS", "config_differences", "overrides_label", "preset_label"]

#: Longest bracketed part of a name; longer ones keep what fits plus ``+N#hash``.
MAX_LABEL_CHARS = 32
#: Keys that never make a run different: bookkeeping, the seed (its own suffix), and the data
#: (shown everywhere else, and long).
_NOT_IN_NAMES = ("run.seed", "run.progress_bar", "run.experiment", "data.")
_SHORT_KEYS = {"base_learning_rate": "lr", "total_timesteps": "steps"}


def _short_key(key: str) -> str:
    last = key.rsplit(".", 1)[-1]
    return _SHORT_KEYS.get(last, last)


def _short_value(value: Any) -> str:
    text = str(value)
    try:
        number = float(text)
    except ValueError:
        return text
    if number.is_integer() and abs(number) >= 1000 and number % 1000 == 0:
        return f"{int(number) // 1000}k"
    return text if number.is_integer() else f"{number:g}"


def overrides_label(overrides: Mapping[str, Any], max_chars: int = MAX_LABEL_CHARS) -> str:
    """``key=value`` pairs with short keys and values, comma-joined, at most ``max_chars`` long.

    Too long: the leading pairs that fit, then ``+<n more>#<4 hex of the whole>``, so two
    different override sets never share a label.
    """
    items = [f"{_short_key(k)}={_short_value(v)}" for k, v in overrides.items()]
    full = ",".join(items)
    if len(full) <= max_chars:
        return full
    digest = hashlib.sha256(repr(sorted((str(k), str(v)) for k, v in overrides.items())).encode()).hexdigest()[:4]
    kept: list[str] = []
    for item in items:
        if len(",".join(kept + [item])) + len(f",+{len(items)}#{digest}") > max_chars:
            break
        kept.append(item)
    return ",".join(kept + [f"+{len(items) - len(kept)}#{digest}"])


def preset_label(preset: str, overrides: Mapping[str, Any]) -> str:
    """``preset`` alone, or ``preset[<overrides_label>]`` when something differs."""
    label = overrides_label(overrides)
    return f"{preset}[{label}]" if label else preset


def config_differences(flat: Mapping[str, Any], preset_flat: Mapping[str, Any]) -> dict[str, Any]:
    """The flattened config's values that differ from its preset's, minus keys names leave out."""
    return {k: v for k, v in flat.items()
            if preset_flat.get(k) != v and not any(k == n or (n.endswith(".") and k.startswith(n))
                                                   for n in _NOT_IN_NAMES)}
