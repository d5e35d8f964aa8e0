"""Do no harm: which components a default may hold, from their A/B verdicts on a panel of markets.

A component is **admitted** when, against the same training without it (its reference arm, ``baseline``
on the panel), it is

* significantly better on at least one market (Holm-adjusted, as the A/B module decides it), and
* not significantly worse on any market of the panel.

A component with no verdict on some market of the panel is not admitted: harm there is unmeasured.
Every decision is a :class:`Admission` with its reason as data (logged, printed, written to JSON).

Examples:
    >>> verdicts = {"replay": {"planted": Verdict(0.8, 0.01, True), "noise": Verdict(-0.1, 0.7, False)},
    ...             "augment": {"planted": Verdict(0.5, 0.02, True), "noise": Verdict(-1.0, 0.03, True)}}
    >>> [(a.component, a.admitted) for a in judge_components(verdicts, markets=("planted", "noise"))]
    [('replay', True), ('augment', False)]
    >>> judge_components(verdicts, markets=("planted", "noise"))[1].reason
    'worse than its reference on noise (effect -1, p_holm 0.03)'
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping, Sequence

__all__ = ["Admission", "Verdict", "admitted", "judge_component", "judge_components", "verdict_from_dict"]


@dataclass(frozen=True)
class Verdict:
    """One A/B verdict of a component's arm against its reference arm on one market.

    Attributes:
        effect: mean difference arm - reference of the primary metric (test Sharpe), paired over seeds.
        p_holm: the Holm-adjusted p-value of the comparison (NaN when untestable).
        significant: the A/B module's decision at its family-wise alpha (Holm).
    """

    effect: float
    p_holm: float
    significant: bool

    @property
    def better(self) -> bool:
        return bool(self.significant) and _finite(self.effect) and self.effect > 0

    @property
    def worse(self) -> bool:
        return bool(self.significant) and _finite(self.effect) and self.effect < 0


@dataclass(frozen=True)
class Admission:
    """The rule's decision on one component.

    Attributes:
        component: its name.
        admitted: whether a default may hold it.
        reason: one sentence, the deciding facts with their numbers.
        better_on: markets where it is significantly better than its reference.
        worse_on: markets where it is significantly worse.
        unmeasured: markets of the panel with no verdict for it.
    """

    component: str
    admitted: bool
    reason: str
    better_on: tuple[str, ...] = ()
    worse_on: tuple[str, ...] = ()
    unmeasured: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def verdict_from_dict(row: Mapping[str, Any]) -> Verdict:
    """A :class:`Verdict` from a panel JSON verdict (``effect``, ``p_holm``, ``significant``)."""
    return Verdict(float(row["effect"]), float(row["p_holm"]), bool(row["significant"]))


def judge_component(component: str, verdicts: Mapping[str, Verdict], *, markets: Sequence[str]) -> Admission:
    """Apply the rule to one component's per-market ``verdicts`` over the panel's ``markets``."""
    unmeasured = tuple(m for m in markets if m not in verdicts)
    better = tuple(m for m in markets if m in verdicts and verdicts[m].better)
    worse = tuple(m for m in markets if m in verdicts and verdicts[m].worse)
    kept = dict(better_on=better, worse_on=worse, unmeasured=unmeasured)
    if worse:
        return Admission(component, False, "worse than its reference on " + _listed(verdicts, worse), **kept)
    if unmeasured:
        return Admission(component, False, f"no verdict on {', '.join(unmeasured)}: harm there is unmeasured", **kept)
    if not better:
        closest = min(markets, key=lambda m: _p(verdicts[m]), default=None)
        where = "" if closest is None else f" (smallest p_holm: {_listed(verdicts, (closest,))})"
        return Admission(component, False, f"not significantly better on any of {len(markets)} markets{where}",
                         **kept)
    return Admission(component, True, f"better on {_listed(verdicts, better)}; not significantly worse on any "
                                      f"of {len(markets)} markets", **kept)


def judge_components(verdicts: Mapping[str, Mapping[str, Verdict]], *, markets: Iterable[str]) -> list[Admission]:
    """The rule on every component of ``verdicts`` (component -> market -> :class:`Verdict`), in order."""
    markets = tuple(markets)
    if not markets:
        raise ValueError("the do-no-harm rule needs at least one market")
    return [judge_component(name, per_market, markets=markets) for name, per_market in verdicts.items()]


def admitted(admissions: Iterable[Admission]) -> tuple[str, ...]:
    """The names of the admitted components, in order."""
    return tuple(a.component for a in admissions if a.admitted)


def _listed(verdicts: Mapping[str, Verdict], markets: Sequence[str]) -> str:
    return ", ".join(f"{m} (effect {verdicts[m].effect:+.3g}, p_holm {verdicts[m].p_holm:.2g})" for m in markets)


def _p(verdict: Verdict) -> float:
    return verdict.p_holm if _finite(verdict.p_holm) else math.inf


def _finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
