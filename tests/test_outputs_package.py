"""mnad.outputs is a package of one module per concept (was one file of 1,169 lines mixing four): each module imports
only those before it in ``ORDER`` (dependencies one way), and the package re-exports each public name of its modules,
the very object, so ``from mnad.outputs import X`` keeps working."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import mnad.outputs

ORDER = ["paths", "reading", "names", "columns", "detect_folder", "evaluation", "detect_summary", "detect_writer",
         "annotated_video"]  # as __init__ lists them


def imported_outputs_modules(name: str) -> set[str]:
    """The mnad.outputs modules that module ``name`` imports (at its top or inside a function)."""
    tree = ast.parse(Path(importlib.import_module(f"mnad.outputs.{name}").__file__).read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mnad.outputs"):
            found.add(node.module.removeprefix("mnad.outputs").lstrip(".") or "__init__")
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("mnad.outputs.") for a in node.names if a.name.startswith("mnad.outputs")}
    return found


def test_each_module_imports_only_those_before_it() -> None:
    modules = sorted(p.stem for p in Path(mnad.outputs.__file__).parent.glob("*.py") if p.stem != "__init__")
    assert sorted(ORDER) == modules
    for i, name in enumerate(ORDER):
        assert imported_outputs_modules(name) <= set(ORDER[:i]), name


def defined_names(name: str) -> set[str]:
    """The public names module ``name`` defines at its top level (functions, classes, constants)."""
    tree = ast.parse(Path(importlib.import_module(f"mnad.outputs.{name}").__file__).read_text(encoding="utf-8"))
    found = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            found.add(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                found |= {t.id for t in (target.elts if isinstance(target, ast.Tuple) else [target]) if isinstance(t, ast.Name)}
    return {n for n in found if not n.startswith("_") and n != "log"}


def test_the_package_re_exports_every_public_name_of_its_modules() -> None:
    names = {name: defined_names(name) for name in ORDER}
    every = [n for defined in names.values() for n in defined]
    assert len(every) == len(set(every))  # each name has one home
    assert sorted(every) == sorted(mnad.outputs.__all__)
    for name, defined in names.items():
        module = importlib.import_module(f"mnad.outputs.{name}")
        for key in defined:
            assert getattr(mnad.outputs, key) is getattr(module, key), f"{name}.{key}"


def test_the_outputs_load_neither_torch_nor_opencv() -> None:
    """Every command loads mnad.outputs, and `mnad report` reads outputs without torch or OpenCV: neither loads with it
    (was: the annotated video's module imported cv2 at its top, so the package did)."""
    import subprocess
    import sys

    code = ("import sys, mnad.outputs, mnad.cli, mnad.report.build; "
            "print(sorted(m for m in ('torch', 'cv2') if m in sys.modules))")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert shown == "[]"
