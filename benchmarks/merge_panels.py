"""One panel from several ``bench_panel.py`` results run with the same arms, seeds and steps (for
example the synthetic markets and, separately, the real ones), for ``compose_full.py``.

    python benchmarks/merge_panels.py benchmarks/results/panel_small5.json \\
        benchmarks/results/panel_small5_real.json --out benchmarks/results/panel_small5_all.json

The runs must agree on arms, seeds, steps and metric; a market present twice is refused. ``n_bars``
and ``seconds`` become per-part lists, since real markets keep their own length.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SAME = ("arms", "seeds", "steps", "metric", "budget")


def merge(parts: list[dict], names: list[str]) -> dict:
    first = parts[0]
    for name, part in zip(names[1:], parts[1:]):
        differ = [k for k in SAME if part.get(k) != first.get(k)]
        if differ:
            raise SystemExit(f"merge_panels: {name} differs from {names[0]} in {', '.join(differ)}")
    markets = [m for part in parts for m in part["markets"]]
    seen = [m["market"] for m in markets]
    twice = sorted({m for m in seen if seen.count(m) > 1})
    if twice:
        raise SystemExit(f"merge_panels: market(s) {', '.join(twice)} appear in more than one part")
    merged = {k: first[k] for k in first if k not in ("markets", "n_bars", "seconds")}
    merged.update(markets=markets, parts=names, n_bars=[p.get("n_bars") for p in parts],
                  seconds=[p.get("seconds") for p in parts])
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("panels", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    parts = [json.loads(p.read_text()) for p in args.panels]
    args.out.write_text(json.dumps(merge(parts, [str(p) for p in args.panels]), indent=1) + "\n")
    print(f"wrote {args.out}: {sum(len(p['markets']) for p in parts)} markets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
