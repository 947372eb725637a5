"""scripts/import_graph.py: the package-level import graph has no cycle and no upward import."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_vegediff_cli_has_no_cycle_and_no_upward_import(capsys):
    assert _script().main([]) == 0
    out = capsys.readouterr().out
    assert "OK: no package cycle, no upward import" in out
    assert "[2] diffusion            -> -" in out  # diffusion imports nothing of the package


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    package = tmp_path / "vegediff_cli"
    for name, text in {"__init__.py": "", **files}.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


def test_a_cycle_and_an_upward_import_fail(tmp_path: Path, capsys):
    package = _package(tmp_path, {
        "cube/__init__.py": "", "cube/cog.py": "from ..pipeline.forecast import run\n",
        "pipeline/__init__.py": "", "pipeline/forecast/__init__.py": "",
        "pipeline/forecast/run.py": "from ...cube import cog\n",
        "diffusion/__init__.py": "", "diffusion/guidance.py": "from ..model import vae\n",
        "model/__init__.py": "", "model/vae.py": "import torch\n",
    })
    assert _script().main([str(package)]) == 1
    out = capsys.readouterr().out
    assert "FAIL cycle: cube <-> pipeline.forecast" in out
    assert "FAIL upward import: cube (layer 1) imports pipeline.forecast (layer 3)" in out
    assert "FAIL diffusion may import only torch and config, errors: it imports model" in out
