"""The package is layered by stage, and the arrows run one way: the typed-config boundary (ner/config.py), then
data, then the model (with the inference engine), then evaluation and tracking, then training and tagging, and the
two apps on top. A module may import from its own stage or from a lower one, never from a higher one or a sibling
stage, so no package imports one that imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ner"
RANKS = {"config": -1, "data": 0, "model": 1, "evaluation": 2, "tracking": 2, "training": 3, "tagging": 3}
RANKS |= {"train": 4, "tag": 4}  # the apps


def _stage(module: str) -> str:
    """`ner.model.engine` -> "model"; `ner.tag` -> "tag"."""
    return module.split(".")[1]


def _imports(path: Path) -> set[str]:
    """Every `ner.*` module the file imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ner."):
            found.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.module == "ner":
            found.update(f"ner.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("ner."))
    return found


def test_every_module_belongs_to_a_stage():
    modules = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in PACKAGE.rglob("*.py")}
    assert modules - {"__init__"} == set(RANKS)


def test_imports_only_go_down_the_stages():
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if own == "__init__":
            continue
        for module in _imports(path):
            other = _stage(module)
            if other != own and RANKS[other] >= RANKS[own]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_an_upward_import(tmp_path):
    path = tmp_path / "x.py"
    path.write_text("def f():\n    from ner.tagging.annotate import Annotator\nfrom ner import tracking\n")
    assert _imports(path) == {"ner.tagging.annotate", "ner.tracking"}
