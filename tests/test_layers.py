"""The package's import structure (STYLE.md, "Our shape"): pure components, glue only at the edges,
and no arrow back up from a lower layer. Read from the source with ``ast``, so a lazy import inside
a function counts as much as one at the top of a module."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "convopt_mlflow"
GLUE_LIBRARIES = {"mlflow": {"tracking"}, "optuna": {"experiments"}}
FRAMEWORKS = {"mlflow", "optuna", "stable_baselines3", "sb3_contrib", "torch"}
PURE = ("components", "stats", "data", "evaluation", "config")
UPPER = {"training", "experiments", "cli", "cli_parser"}
BELOW_TRAINING = ("components", "stats", "data", "env", "evaluation", "config", "tracking")


def _imports(path: Path) -> set[str]:
    """Absolute module names ``path`` imports (relative imports resolved against the package)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(parts[: len(parts) - node.level])
                module = ".".join(base + ([node.module] if node.module else []))
                names.update([module] if node.module else [f"{module}.{a.name}" for a in node.names])
            else:
                names.add(node.module or "")
    return names


def _layer(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


MODULES = sorted(PACKAGE.rglob("*.py"))
IMPORTS = {path: _imports(path) for path in MODULES}


def _offenders(allowed) -> list[str]:
    return [f"{path.relative_to(PACKAGE)} imports {name}"
            for path, names in IMPORTS.items() for name in sorted(names) if not allowed(_layer(path), name)]


@pytest.mark.parametrize("library", sorted(GLUE_LIBRARIES))
def test_each_glue_library_is_imported_only_by_its_glue(library):
    homes = GLUE_LIBRARIES[library]
    assert _offenders(lambda layer, name: name.split(".")[0] != library or layer in homes) == []


def test_pure_layers_import_no_framework():
    assert _offenders(lambda layer, name: layer not in PURE or name.split(".")[0] not in FRAMEWORKS) == []


def test_no_arrow_back_up_to_training_experiments_or_the_cli():
    def allowed(layer: str, name: str) -> bool:
        bits = name.split(".")
        return layer not in BELOW_TRAINING or bits[0] != "convopt_mlflow" or len(bits) < 2 or bits[1] not in UPPER
    assert _offenders(allowed) == []


def test_the_scan_sees_relative_and_lazy_imports():
    # tracking/promotion.py reached up into training.setup inside a function until the loader was injected.
    names = IMPORTS[PACKAGE / "tracking" / "promotion.py"]
    assert "convopt_mlflow.evaluation.promotion" in names and "mlflow.tracking" in names
    assert any(n.startswith("convopt_mlflow.tracking") for n in IMPORTS[PACKAGE / "training" / "coordinator.py"])
