"""The CLI starts without the heavy libraries: `vegediff --help` and `vegediff info --exit-codes` import no
torch, xarray, rioxarray, pandas or numpy (their import alone takes seconds; benchmarks/forecast_speed.py
times the commands)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "xarray", "rioxarray", "rasterio", "pandas", "numpy", "dask", "netCDF4", "matplotlib")

PROBE = """
import sys
from vegediff_cli.cli.app import main
code = main(sys.argv[1:])
print("LOADED", " ".join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)
sys.exit(code)
"""


def _loaded(*args: str) -> tuple[int, set[str], str]:
    done = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *args], capture_output=True, text=True,
                          check=False)
    line = next(line for line in done.stderr.splitlines() if line.startswith("LOADED"))
    return done.returncode, set(line.split()[1:]), done.stdout


def test_help_loads_no_heavy_library():
    code, loaded, out = _loaded("--help")
    assert code == 0 and "forecast" in out and "ensemble" in out
    assert loaded == set()


def test_exit_code_table_loads_no_heavy_library():
    code, loaded, out = _loaded("info", "--exit-codes")
    assert code == 0 and "130" in out
    assert loaded == set()


def test_every_command_help_loads_no_heavy_library():
    for command in ("fetch", "prepare", "forecast", "ensemble", "evaluate", "info", "train"):
        code, loaded, out = _loaded(command, "--help")
        assert code == 0 and "Usage" in out, command
        assert loaded == set(), command
