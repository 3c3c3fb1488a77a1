"""The package layout: imports flow one way, the method needs no DeepSpeed, recipes stay short."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "earlybert"
# Lower layers never import higher ones; a module may import its own package.
LAYERS = ["errors", "config", "models", "ticket", "dsee", "merging", "data", "tasks", "train", "report",
          "integrations", "recipes", "cli"]


def earlybert_imports(path: Path) -> set[str]:
    """The earlybert.<part> names a module imports, anywhere in it (function-level imports included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("earlybert"):
            parts = node.module.split(".")
            found.update({parts[1]} if len(parts) > 1 else {a.name for a in node.names})
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("earlybert."))
    return found


def layer_of(path: Path) -> str:
    part = path.relative_to(PACKAGE).parts[0]
    return part.removesuffix(".py")


@pytest.mark.parametrize("path", sorted(p for p in PACKAGE.rglob("*.py") if p.name not in ("__init__.py",
                                                                                          "__main__.py")),
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_flow_one_way(path):
    own = layer_of(path)
    if own not in LAYERS:
        pytest.fail(f"{path} is in no layer: add its package to LAYERS")
    for imported in earlybert_imports(path):
        if imported == own:
            continue
        assert imported in LAYERS, f"{path} imports earlybert.{imported}, which is in no layer"
        assert LAYERS.index(imported) < LAYERS.index(own), f"{path} ({own}) imports the higher earlybert.{imported}"


def test_the_method_imports_no_deepspeed():
    code = ("import sys, earlybert.ticket.search, earlybert.ticket.shrink, earlybert.ticket.draw, "
            "earlybert.dsee.config, earlybert.merging.methods; "
            "assert 'deepspeed' not in sys.modules, 'deepspeed was imported'")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("path", sorted((PACKAGE / "recipes").glob("*.py")), ids=lambda p: p.name)
def test_recipe_functions_stay_under_60_lines(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            assert length <= 60, f"{path.name}:{node.name} is {length} lines"
