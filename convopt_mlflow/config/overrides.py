"""``key=value`` overrides into the config tree, flattening, JSON and hashing."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
from typing import Any, Iterable, Mapping

from ..errors import ConfigError
from .tree import OptimizedTrainingConfig
from .validation import kind_name, suggest


def parse_overrides(overrides: Mapping[str, str] | Iterable[str] | str) -> dict[str, str]:
    """Turn ``"a=1,b.c=x"`` or ``["a=1", "b.c=x"]`` into ``{"a": "1", "b.c": "x"}``.

    A text value may itself hold commas (``data.source=synthetic:n_bars=5000,seed=3``): a
    segment whose key is not a config key continues the previous text value.
    """
    if isinstance(overrides, Mapping):
        return {str(k).strip(): v for k, v in overrides.items()}
    items = [overrides] if isinstance(overrides, str) else list(overrides)
    defaults = flatten(OptimizedTrainingConfig())
    out: dict[str, str] = {}
    for item in items:
        last = None
        for pair in str(item).split(","):
            if not pair.strip():
                continue
            key, sep, value = pair.partition("=")
            key = key.strip()
            if last is not None and isinstance(defaults.get(last), str) and key not in defaults:
                out[last] = f"{out[last]},{pair.strip()}"
                continue
            if not sep or not key:
                raise ConfigError(f"override {pair.strip()!r} is not key=value (e.g. ppo.batch_size=128)")
            out[key] = value.strip()
            last = key
    return out


def apply_values(cfg: Any, values: Mapping[str, Any], prefix: str = "") -> Any:
    """Return a copy of ``cfg`` with dotted-path ``values`` coerced to each field's type."""
    nested: dict[str, dict[str, Any]] = {}
    direct: dict[str, Any] = {}
    hints = typing.get_type_hints(type(cfg))
    names = {f.name for f in dataclasses.fields(cfg)}
    for key, value in values.items():
        head, _, rest = key.partition(".")
        full = prefix + key
        if head not in names:
            hint = suggest(full, [prefix + k for k in flatten(cfg)])
            raise ConfigError(f"unknown config key {full!r}{hint}; see `convopt config keys` for the valid keys")
        if rest:
            if not dataclasses.is_dataclass(getattr(cfg, head)):
                hint = suggest(full, [prefix + k for k in flatten(cfg)])
                raise ConfigError(f"unknown config key {full!r}: {prefix}{head} has no sub-fields{hint}")
            nested.setdefault(head, {})[rest] = value
        elif dataclasses.is_dataclass(getattr(cfg, head)):
            raise ConfigError(f"config key {full!r} is a section; set one of its fields, e.g. {full}.<field>=...")
        else:
            direct[head] = _coerce(full, value, hints[head])
    for head, sub in nested.items():
        direct[head] = apply_values(getattr(cfg, head), sub, f"{prefix}{head}.")
    return dataclasses.replace(cfg, **direct)


def _coerce(key: str, value: Any, kind: Any) -> Any:
    if not isinstance(value, str):
        return tuple(value) if typing.get_origin(kind) is tuple else value
    text = value.strip()
    try:
        if kind is bool:
            lowered = text.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            number = float(text)
            if not number.is_integer():
                raise ValueError
            return int(number)
        if kind is float:
            number = float(text)
            if not math.isfinite(number):
                raise ValueError
            return number
        if typing.get_origin(kind) is tuple:
            item_type = typing.get_args(kind)[0]
            parts = [p for p in text.split("+") if p.strip()]
            return tuple(_coerce(key, p, item_type) for p in parts)
        return text
    except ValueError:
        raise ConfigError(f"bad value {value!r} for {key}: expected {kind_name(kind)}") from None


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten the config tree into ``{"ppo.batch_size": 256, ...}`` (tuples joined by '+')."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            out.update(flatten(value, key + "."))
        elif isinstance(value, tuple):
            out[key] = "+".join(str(v) for v in value)
        else:
            out[key] = value
    return out


def to_json(cfg: OptimizedTrainingConfig) -> str:
    return json.dumps(dataclasses.asdict(cfg), indent=2, sort_keys=True)


def config_hash(cfg: OptimizedTrainingConfig) -> str:
    """Short sha256 of the canonical JSON of the config."""
    return hashlib.sha256(to_json(cfg).encode()).hexdigest()[:12]


def from_dict(values: Mapping[str, Any]) -> OptimizedTrainingConfig:
    """Rebuild a config from ``dataclasses.asdict`` output (e.g. a run's config.json)."""
    flat: dict[str, Any] = {}

    def walk(d: Mapping[str, Any], prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, Mapping):
                walk(v, f"{prefix}{k}.")
            else:
                flat[f"{prefix}{k}"] = tuple(v) if isinstance(v, list) else v

    walk(values, "")
    return apply_values(OptimizedTrainingConfig(), flat)


def field_docs(cls: type = OptimizedTrainingConfig, prefix: str = "") -> dict[str, str]:
    """Field docstrings (``{"ppo.batch_size": "Minibatch size ..."}``) parsed from the source, for --help."""
    import ast
    import inspect
    import textwrap

    docs: dict[str, str] = {}
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    for node, nxt in zip(body, body[1:] + [None]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            name = node.target.id
            if isinstance(nxt, ast.Expr) and isinstance(getattr(nxt, "value", None), ast.Constant):
                docs[prefix + name] = str(nxt.value.value)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.default_factory if f.default_factory is not dataclasses.MISSING else None):
            docs.update(field_docs(f.default_factory, f"{prefix}{f.name}."))  # type: ignore[arg-type]
    return docs
