"""The wheel and sdist carry the shipped weights; `--version` and `info --weights` say which weights are in use."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT
from vegediff_cli import __version__

SHIPPED = PROJECT_ROOT / "weights" / "vegediff-small.safetensors"
CARD = PROJECT_ROOT / "weights" / "MODEL_CARD.md"
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE", "vegediff_cli", "weights", "sample_data")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_version_names_the_weights_and_their_sha256(cli, monkeypatch):
    monkeypatch.delenv("VEGEDIFF_WEIGHTS", raising=False)
    result = cli("--version")
    assert result.code == 0, result
    first, second = result.out.strip().splitlines()
    assert first == f"vegediff {__version__}"
    assert second.startswith(f"weights: {SHIPPED} (shipped; preset small, trained ")
    assert second.endswith(f"sha256 {_sha256(SHIPPED)})")


def test_info_weights_describes_the_shipped_weights(cli, monkeypatch):
    monkeypatch.delenv("VEGEDIFF_WEIGHTS", raising=False)
    result = cli("info", "--weights", "--json")
    assert result.code == 0, result
    info = json.loads(result.out)
    assert info["path"] == str(SHIPPED) and info["source"] == "shipped"
    assert info["sha256"] == _sha256(SHIPPED) and info["size_bytes"] == SHIPPED.stat().st_size
    assert info["preset"] == "small" and info["format"] == "vegediff-weights/1" and info["denoisers"] >= 1
    assert info["trained_on_sequences"] >= 1 and info["held_out"] and info["model_card"] == str(CARD)
    assert 0 < info["validation_rmse"] < 1
    assert info["spread_calibration"] == "added variance per lead"  # the form forecasts apply (calibration.py)
    table = cli("info", "--weights")
    assert table.code == 0 and _sha256(SHIPPED) in table.out.replace("\n", "").replace("│", "").replace(" ", "")


def test_weights_from_the_environment_and_bad_files(cli, monkeypatch, tmp_path):
    copy = tmp_path / "mine.safetensors"
    shutil.copy(SHIPPED, copy)
    monkeypatch.setenv("VEGEDIFF_WEIGHTS", str(copy))
    info = json.loads(cli("info", "--weights", "--json").out)
    assert info["source"] == "$VEGEDIFF_WEIGHTS" and info["path"] == str(copy)
    assert f"({'$VEGEDIFF_WEIGHTS'}; preset small" in cli("--version").out
    monkeypatch.setenv("VEGEDIFF_WEIGHTS", str(tmp_path / "gone.safetensors"))
    version = cli("--version")
    assert version.code == 0 and "gone.safetensors ($VEGEDIFF_WEIGHTS, missing)" in version.out
    missing = cli("info", "--weights")
    assert missing.code == 3 and "does not exist" in missing.err
    foreign = cli("info", "--weights", PROJECT_ROOT / "README.md")
    assert foreign.code == 9 and "not a readable weights file" in foreign.err


def test_version_text_imports_no_torch():
    code = ("import sys; from vegediff_cli.cli.version import version_text; version_text(); "
            "print(sorted(m for m in ('torch', 'xarray', 'rasterio') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PROJECT_ROOT)
    assert out.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """sdist and wheel (built from the sdist) of a copy of the source tree: the checkout stays clean."""
    root = tmp_path_factory.mktemp("build")
    source = root / "src"
    source.mkdir()
    for name in SOURCES:
        path = PROJECT_ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(path, source / name)
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(root / "dist"), str(source)],
                   check=True, capture_output=True)
    return root / "dist"


def test_wheel_carries_the_weights_and_model_card(built):
    [wheel] = built.glob("vegediff_cli-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert archive.read("vegediff_cli/weights/vegediff-small.safetensors") == SHIPPED.read_bytes()
        assert archive.read("vegediff_cli/weights/MODEL_CARD.md") == CARD.read_bytes()
        entry_points = archive.read(f"vegediff_cli-{__version__}.dist-info/entry_points.txt").decode()
    assert "vegediff = vegediff_cli.cli.app:run" in entry_points
    assert "vegediff_cli/qgis/project.py" in names and "vegediff_cli/model/shipped.py" in names
    assert not any(n.startswith(("weights/", "tests/")) for n in names)  # nothing outside the package


def test_sdist_carries_the_weights_source(built):
    [sdist] = built.glob("vegediff_cli-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {n.split("/", 1)[1] for n in archive.getnames() if "/" in n}
    assert {"weights/vegediff-small.safetensors", "weights/MODEL_CARD.md", "setup.py",
            "sample_data/29SND_2017_sample.nc"} <= names


def test_installed_package_finds_its_own_weights(built, tmp_path):
    """Unpacked as pip installs it (no checkout around it), the package uses the weights inside it."""
    [wheel] = built.glob("vegediff_cli-*.whl")
    site = tmp_path / "site-packages"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    code = ("from vegediff_cli.cli.version import version_text, weights_in_use; "
            "print(weights_in_use()['path']); print(version_text())")
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("VEGEDIFF_WEIGHTS", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path,
                         env=env).stdout.splitlines()
    assert out[0] == str(site / "vegediff_cli" / "weights" / "vegediff-small.safetensors")
    assert out[2].endswith(f"sha256 {_sha256(SHIPPED)})")
