"""The folders are the layers: wavlm/ and hifigan/ import nothing above them, and the training data
loader (with the split-list script) loads without WavLM or the converter."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = ("knnsvc", "wavlm", "hifigan", "experiments")
ALLOWED = {
    "wavlm": ("wavlm",),
    "hifigan": ("hifigan",),
}
"""The project modules each bottom layer may import (third-party imports are not restricted)."""
ABOVE_THE_BOTTOM = (
    "knnsvc.pipeline",
    "knnsvc.matching",
    "knnsvc.pool",
    "knnsvc.encoder",
    "knnsvc.apps",
    "knnsvc.eval",
    "knnsvc.training",
    "experiments",
)


def _inside(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def project_imports(path: Path) -> set[str]:
    """Every project module a file imports, at module level or inside functions."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            if node.module in PROJECT_PACKAGES:  # `from knnsvc import harmonics` names a module
                modules.update(f"{node.module}.{alias.name}" for alias in node.names)
            else:
                modules.add(node.module)
    return {module for module in modules if _inside(module, PROJECT_PACKAGES)}


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_bottom_layers_import_nothing_above_them(layer):
    files = sorted((REPO / layer).glob("*.py"))
    assert files
    wrong = {
        f"{path.relative_to(REPO)}: {module}"
        for path in files
        for module in project_imports(path)
        if not _inside(module, ALLOWED[layer])
    }
    assert not wrong, f"imports from above the {layer}/ layer: {sorted(wrong)}"


def loaded_project_modules(code: str) -> set[str]:
    """Project modules in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    script = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    )
    modules = json.loads(done.stdout.splitlines()[-1])
    return {module for module in modules if _inside(module, PROJECT_PACKAGES)}


def test_bottom_layers_load_nothing_above_them_transitively():
    imports = "\n".join(
        f"import {layer}.{path.stem}" for layer in sorted(ALLOWED) for path in sorted((REPO / layer).glob("*.py"))
    )
    loaded = loaded_project_modules(imports)
    assert "hifigan.generator" in loaded and "wavlm.model" in loaded
    assert not {module for module in loaded if _inside(module, ABOVE_THE_BOTTOM)}


def test_training_data_loads_without_wavlm_or_the_converter():
    loaded = loaded_project_modules(
        "import knnsvc.training.dataset, knnsvc.training.corpus, knnsvc.training.features\n"
        "import importlib.util\n"
        "spec = importlib.util.spec_from_file_location('make_splits', 'data_splits/make_splits.py')\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))"
    )
    assert {"knnsvc.training.dataset", "knnsvc.training.corpus", "knnsvc.training.features"} <= loaded
    converter = (
        "wavlm", "knnsvc.pipeline", "knnsvc.encoder", "knnsvc.matching", "knnsvc.pool", "knnsvc.training.prematch"
    )
    assert not {module for module in loaded if _inside(module, converter)}


def test_no_application_imports_another_or_a_private_name():
    """knnsvc/apps/: each command imports the shared module `common` and the library, never another
    command, and no project module's private (underscored) names."""
    apps = sorted((REPO / "knnsvc" / "apps").glob("*.py"))
    commands = {f"knnsvc.apps.{path.stem}" for path in apps} - {"knnsvc.apps.__init__", "knnsvc.apps.common"}
    assert {"knnsvc.apps.convert", "knnsvc.apps.stream", "knnsvc.apps.cover", "knnsvc.apps.demo",
            "knnsvc.apps.score"} <= commands
    wrong = set()
    for path in apps:
        own = f"knnsvc.apps.{path.stem}"
        wrong |= {f"{path.name}: {module}" for module in project_imports(path) if module in commands - {own}}
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and _inside(node.module, PROJECT_PACKAGES):
                wrong |= {f"{path.name}: {node.module}.{alias.name}" for alias in node.names
                          if alias.name.startswith("_") and not alias.name.startswith("__")}
    assert not wrong, f"applications importing another application or a private name: {sorted(wrong)}"


def test_no_module_imports_a_private_name_of_another():
    """Private names stay in their module: every project import names public API."""
    wrong = set()
    for package in ("knnsvc", "hifigan", "wavlm"):
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.module and _inside(node.module, PROJECT_PACKAGES):
                    wrong |= {f"{path.relative_to(REPO)}: {node.module}.{alias.name}" for alias in node.names
                              if alias.name.startswith("_") and not alias.name.startswith("__")}
    assert not wrong, f"imports of private names: {sorted(wrong)}"
