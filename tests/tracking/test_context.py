"""The run context provider, through MLflow's real entry-point registry."""
from __future__ import annotations

import importlib
import importlib.metadata
import subprocess
import sys

import mlflow
import pytest

from convopt_mlflow.tracking.context import ConvoptRunContextProvider, convopt_tags

VERSION = importlib.metadata.version("convopt-mlflow")


def git(repo, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path):
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q")
    (path / "a.txt").write_text("one\n")
    git(path, "add", "a.txt")
    git(path, "commit", "-qm", "init")
    return path


def test_in_context_follows_training_import_and_env(monkeypatch):
    provider = ConvoptRunContextProvider()
    monkeypatch.delitem(sys.modules, "convopt_mlflow.training", raising=False)
    monkeypatch.delenv("CONVOPT_ACTIVE", raising=False)
    assert provider.in_context() is False
    monkeypatch.setenv("CONVOPT_ACTIVE", "0")
    assert provider.in_context() is False
    monkeypatch.setenv("CONVOPT_ACTIVE", "1")
    assert provider.in_context() is True
    monkeypatch.delenv("CONVOPT_ACTIVE")
    importlib.import_module("convopt_mlflow.training")
    assert provider.in_context() is True


def test_git_commit_and_dirty_state(repo):
    head = git(repo, "rev-parse", "HEAD")
    assert convopt_tags(cwd=str(repo)) == {
        "convopt.version": VERSION,
        "convopt.git_commit": head,
        "convopt.git_dirty": "false",
    }
    (repo / "untracked.txt").write_text("x\n")
    assert convopt_tags(cwd=str(repo))["convopt.git_dirty"] == "false"
    (repo / "a.txt").write_text("two\n")
    assert convopt_tags(cwd=str(repo))["convopt.git_dirty"] == "true"


def test_no_git_facts_outside_a_repository_or_before_the_first_commit(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    assert convopt_tags(cwd=str(plain)) == {"convopt.version": VERSION}
    git(plain, "init", "-q")
    assert convopt_tags(cwd=str(plain)) == {"convopt.version": VERSION}


def test_fluent_start_run_gets_convopt_tags_through_the_entry_point(store, repo, monkeypatch):
    importlib.import_module("convopt_mlflow.training")
    monkeypatch.delenv("CONVOPT_ACTIVE", raising=False)
    monkeypatch.chdir(repo)
    with mlflow.start_run() as run:
        run_id = run.info.run_id
    assert mlflow.active_run() is None
    tags = store.client.get_run(run_id).data.tags
    assert tags["convopt.version"] == VERSION
    assert tags["convopt.git_commit"] == git(repo, "rev-parse", "HEAD")
    assert tags["convopt.git_dirty"] == "false"


def test_importing_context_before_mlflow_still_registers_once(tmp_path):
    code = (
        "import warnings; warnings.simplefilter('error')\n"
        "import convopt_mlflow.tracking.context as c\n"
        "from mlflow.tracking.context.registry import _run_context_provider_registry as r\n"
        "print(sum(isinstance(p, c.ConvoptRunContextProvider) for p in r))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"
