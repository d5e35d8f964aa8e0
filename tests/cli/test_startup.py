"""What a `convopt` process pays before and around learning: imports and garbage collection."""
import os
import subprocess
import sys

TINY = ["--data", "synthetic:n_bars=3000,seed=1,signal_ic=0.1", "--total-timesteps", "512", "--quiet",
        "--set", "env.n_envs=4,ppo.n_steps=64,ppo.batch_size=64,ppo.n_epochs=1,ppo.net_arch=8,env.window=8,"
                 "env.episode_length=64,run.eval_freq=256,run.checkpoint_freq=256"]


def _python(code: str, tmp_path, store: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "CONVOPT_CHECKPOINT_ROOT": str(tmp_path / "ckpt")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=300)


def test_a_train_process_exempts_its_imports_from_garbage_collection(tmp_path, mlflow_uri):
    """Full collections would walk every object torch, SB3 and MLflow built, dozens of times per run."""
    proc = _python("import gc, sys\nfrom convopt_mlflow.cli import main\n"
                   f"code = main(['train', *{TINY!r}])\nprint('FROZEN', gc.get_freeze_count(), code)",
                   tmp_path, mlflow_uri)
    assert proc.returncode == 0, proc.stderr[-2000:]
    frozen, code = proc.stdout.split("FROZEN")[-1].split()
    assert code == "0" and int(frozen) > 100_000


def test_help_and_a_bad_preset_import_neither_torch_nor_mlflow(tmp_path, mlflow_uri):
    heavy = ("torch", "mlflow", "stable_baselines3", "plotly", "optuna")
    for argv in (["--help"], ["train", "--help"], ["train", "--preset", "bogus"]):
        proc = _python("import sys\nfrom convopt_mlflow.cli import main\n"
                       f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
                       f"print('LOADED', [m for m in {heavy!r} if m in sys.modules])", tmp_path, mlflow_uri)
        assert proc.stdout.split("LOADED")[-1].strip() == "[]", (argv, proc.stdout[-500:], proc.stderr[-500:])
