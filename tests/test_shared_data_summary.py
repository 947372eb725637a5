"""A run without ../shared/data says so at the end, and CI's switch turns those skips into failures."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

CONFTEST = Path(__file__).with_name("conftest.py")


def _run(project: Path, require: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "VEGEDIFF_REQUIRE_SHARED_DATA"}
    if require:
        env["VEGEDIFF_REQUIRE_SHARED_DATA"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
                          cwd=project, env=env, capture_output=True, text=True, timeout=120)


def test_missing_real_data_is_announced_and_fails_when_required(tmp_path):
    project = tmp_path / "clone"  # no shared/data beside it
    (project / "tests").mkdir(parents=True)
    shutil.copy(CONFTEST, project / "tests" / "conftest.py")
    (project / "tests" / "test_cubes.py").write_text(
        "def test_reads_real_cubes(shared_data):\n    assert shared_data.exists()\n\n"
        "def test_without_data():\n    assert True\n")

    lenient = _run(project, require=False)
    assert lenient.returncode == 0, lenient.stdout + lenient.stderr
    assert "WARNING: 1 test(s) skipped: real data not found at" in lenient.stdout
    assert str(tmp_path / "shared" / "data") in lenient.stdout

    strict = _run(project, require=True)
    assert strict.returncode == 1 and "1 passed, 1 error" in strict.stdout, strict.stdout
    assert "(VEGEDIFF_REQUIRE_SHARED_DATA=1)" in strict.stdout
    assert "WARNING" not in strict.stdout
