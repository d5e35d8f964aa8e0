"""Benchmark: load + validate + features at the seed's scale (1.29M bars).

Generates a synthetic hourly market, writes it to a temporary Parquet file,
then measures, in a fresh subprocess, the wall time and peak RSS of
``load_bars(path)`` (which validates) followed by ``compute_features``.
The peak is the subprocess's own (VmHWM, see :func:`peak_rss_mb`), so nothing
from generating the data is counted. Prints one JSON line; exits 1 when over budget.

Budget (DESIGN.md): <= 15 s and <= 1 GB peak RSS.

    python benchmarks/bench_data.py [--n-bars 1290000] [--seed 0] [--format parquet|csv]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def measure(path: str) -> dict:
    """Run in the child: time the pipeline and report this process's peak RSS."""
    started = time.perf_counter()
    from convopt_mlflow.data import compute_features, load_bars

    imported = time.perf_counter()
    rss_after_import = peak_rss_mb()
    bars = load_bars(path)
    loaded = time.perf_counter()
    features = compute_features(bars.frame)
    done = time.perf_counter()
    return {
        "n_bars": bars.n_bars,
        "n_features": features.n_features,
        "import_s": round(imported - started, 3),
        "load_validate_s": round(loaded - imported, 3),
        "features_s": round(done - loaded, 3),
        "total_s": round(done - imported, 3),
        "rss_after_import_mb": rss_after_import,
        "peak_rss_mb": peak_rss_mb(),
    }


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB.

    Reads VmHWM from /proc: on Linux, ``ru_maxrss`` of a freshly spawned child
    starts from the parent's high-water mark (it survives fork/vfork + exec), so
    it would count the memory used to generate the data. Falls back to
    ``ru_maxrss`` (KiB on Linux) where /proc is missing.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-bars", type=int, default=1_290_000, help="bars to generate")
    parser.add_argument("--seed", type=int, default=0, help="synthetic market seed")
    parser.add_argument("--signal-ic", type=float, default=0.05, help="planted signal IC (adds feat_signal)")
    parser.add_argument("--format", choices=("parquet", "csv"), default="parquet", help="file format to load")
    parser.add_argument("--budget-s", type=float, default=15.0, help="time budget for load+validate+features")
    parser.add_argument("--budget-mb", type=float, default=1024.0, help="peak RSS budget of the measured process")
    parser.add_argument("--measure", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return 0

    from convopt_mlflow.data import generate_market

    started = time.perf_counter()
    frame = generate_market(args.n_bars, args.seed, signal_ic=args.signal_ic).frame
    generate_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"bars.{args.format}"
        if args.format == "parquet":
            frame.to_parquet(path)
        else:
            frame.to_csv(path)
        size_mb = path.stat().st_size / 2**20
        del frame
        child = subprocess.run(
            [sys.executable, __file__, "--measure", str(path)], capture_output=True, text=True, check=False
        )
    if child.returncode != 0:
        sys.stderr.write(child.stderr)
        return child.returncode
    result = {"benchmark": "data", "format": args.format, "file_mb": round(size_mb, 1),
              "generate_s": round(generate_s, 3), **json.loads(child.stdout)}
    result.update(budget_s=args.budget_s, budget_mb=args.budget_mb,
                  within_budget=result["total_s"] <= args.budget_s and result["peak_rss_mb"] <= args.budget_mb)
    print(json.dumps(result))
    return 0 if result["within_budget"] else 1


if __name__ == "__main__":
    sys.exit(main())
