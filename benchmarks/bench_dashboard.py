"""What one poll of the live dashboard costs against a sqlite tracking store, and its first look at a run.

    python benchmarks/bench_dashboard.py --runs 100 --points 100000 --repeats 5 --out benchmarks/results/dashboard.json
    python benchmarks/bench_dashboard.py --first-look 100000 --repeats 2 --before 59aaab7 \
        --out benchmarks/results/dashboard_first_look.json

``--first-look N`` measures only the first look (see :mod:`bench_dashboard_first_look`).

The store holds ``--runs`` finished runs sharing ``--points`` metric points (10 keys the
convergence view draws, equal steps), plus one "big" run with ``--points`` points of its
own that keeps training: before each incremental poll, one more rollout (one point per key)
is logged to it. Timed, median over ``--repeats``:

- ``runs_list``: the runs table (one ``search_runs`` of every run);
- ``big_first``: the first read of the big run (every point, paged);
- ``big_poll_idle``: a poll when nothing new was logged (one ``get_run``);
- ``big_poll_new``: a poll after one new rollout (``get_run`` + one page per key);
- ``big_full``: what a naive poll costs: ``get_metric_history`` of every key;
- ``figure_full`` / ``figure_2000``: the convergence figure of the big run built and
  serialized to JSON with every point, and thinned to 2,000 points per curve (what
  ``/api/run`` sends by default), and its size in bytes.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from convopt_mlflow.evaluation.dashboards import series_convergence_figure
from convopt_mlflow.tracking.live import LiveReader

KEYS = ("train/loss", "train/value_loss", "train/entropy_loss", "convergence/grad_norm", "convergence/param_norm",
        "lr", "eval/score", "train/approx_kl", "convergence/plateau_detected", "convergence/generalization_gap")
STEP = 256


def _log(client: MlflowClient, run_id: str, steps: range, t0: int) -> None:
    batch = [Metric(k, 1.0 / (1 + s), t0 + s, s * STEP) for s in steps for k in KEYS]
    for i in range(0, len(batch), 1000):
        client.log_batch(run_id, metrics=batch[i:i + 1000])


def _median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--points", type=int, default=100_000, help="points over all runs, and in the big run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="")
    parser.add_argument("--first-look", type=int, default=0, metavar="N",
                        help="measure the first look at a run with N points per drawn key instead")
    parser.add_argument("--before", default="", metavar="REV",
                        help="with --first-look: also time the reader and app of this git revision")
    parser.add_argument("--store", default="", help="with --first-look: reuse (or build and keep) this store dir")
    args = parser.parse_args()
    if args.first_look:
        from bench_dashboard_first_look import first_look

        first_look(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        client = MlflowClient(tracking_uri=f"sqlite:///{tmp}/mlflow.db")
        experiment = client.create_experiment("convopt", artifact_location=f"{tmp}/artifacts")
        per_run = max(1, args.points // (args.runs * len(KEYS)))
        start = time.perf_counter()
        for i in range(args.runs):
            run = client.create_run(experiment, run_name=f"baseline-s{i}", tags={"convopt.preset": "baseline"})
            _log(client, run.info.run_id, range(per_run), 0)
            client.set_terminated(run.info.run_id, "FINISHED")
        big = client.create_run(experiment, run_name="full-s0").info.run_id
        big_steps = args.points // len(KEYS)
        _log(client, big, range(big_steps), 0)
        build_s = time.perf_counter() - start
        reader = LiveReader(client)
        results: dict[str, float] = {"store_points": args.runs * per_run * len(KEYS) + big_steps * len(KEYS),
                                     "big_run_points": big_steps * len(KEYS), "build_store_s": build_s}
        results["runs_list_s"] = _median_s(lambda: reader.runs("convopt", max_results=args.runs + 1), args.repeats)
        start = time.perf_counter()
        series = reader.series(big)
        results["big_first_s"] = time.perf_counter() - start
        results["big_poll_idle_s"] = _median_s(lambda: reader.series(big), args.repeats)
        counter = iter(range(big_steps, big_steps + 10 * args.repeats))

        def new_rollout_then_poll():
            step = next(counter)
            _log(client, big, range(step, step + 1), 10**9)
            t = time.perf_counter()
            reader.series(big)
            return time.perf_counter() - t

        results["big_poll_new_s"] = statistics.median(new_rollout_then_poll() for _ in range(args.repeats))
        results["big_full_s"] = _median_s(lambda: [client.get_metric_history(big, k) for k in KEYS], args.repeats)
        series = reader.series(big)
        figure = {}

        for label, cap in (("figure_full", None), ("figure_2000", 2000)):
            def build_figure(cap=cap):
                figure["json"] = series_convergence_figure(series, title="full-s0", max_points=cap).to_json()

            results[f"{label}_s"] = _median_s(build_figure, args.repeats)
            results[f"{label}_bytes"] = len(figure["json"])
    width = max(map(len, results))
    for key, value in results.items():
        print(f"{key:<{width}}  {value:,.4f}" if isinstance(value, float) else f"{key:<{width}}  {value:,}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
