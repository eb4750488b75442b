"""The one-way boundaries of the code, read from its imports (ast, at any depth of a module):
MLflow only under orchestrator/tracking/; `ray.tune` only in orchestrator/search/tune_stage.py and
workers/trial.py; search_spaces/
imports neither torch nor ray nor mlflow; workers/ and search_spaces/ never import orchestrator/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def _modules(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (ROOT / f).rglob("*.py"))


def _importers(prefix: str, *folders: str) -> set[str]:
    return {str(p.relative_to(ROOT)) for p in _modules(*folders)
            if any(m == prefix or m.startswith(prefix + ".") for m in _imports(p))}


CODE = ("orchestrator", "workers", "search_spaces", "cluster")


def test_mlflow_is_imported_only_under_orchestrator_tracking():
    outside = {p for p in _importers("mlflow", *CODE) if not p.startswith("orchestrator/tracking/")}
    assert outside == set()


def test_ray_tune_is_imported_only_by_the_tune_stage_and_the_trial_adapter():
    allowed = {"orchestrator/search/tune_stage.py", "workers/trial.py"}
    assert _importers("ray.tune", *CODE) <= allowed
    assert "orchestrator/search/tune_stage.py" in _importers("ray.tune", *CODE)


@pytest.mark.parametrize("package", ["torch", "ray", "mlflow"])
def test_search_spaces_import_neither_torch_nor_ray_nor_mlflow(package):
    assert _importers(package, "search_spaces") == set()


def test_workers_and_search_spaces_never_import_the_driver():
    assert _importers("orchestrator", "workers", "search_spaces") == set()


def test_the_scanner_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from mlflow.tracking import MlflowClient\n    import ray.tune\n")
    assert {"mlflow.tracking", "ray.tune"} <= _imports(module)
