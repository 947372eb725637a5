"""Shared fixtures: the real data in ../shared/data, and helpers to run the CLI in-process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vegediff_cli.cli.app import main

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
REQUIRE_SHARED = os.environ.get("VEGEDIFF_REQUIRE_SHARED_DATA") == "1"


def _shared(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        message = f"real data not found at {path}"
        if REQUIRE_SHARED:
            pytest.fail(message + " (VEGEDIFF_REQUIRE_SHARED_DATA=1)")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of ../shared/data; skips (or fails in CI) when absent."""
    return _shared("")


@pytest.fixture(scope="session")
def greenearthnet_cubes(shared_data: Path) -> list[Path]:
    return sorted((shared_data / "greenearthnet").glob("*.nc"))


@pytest.fixture(scope="session")
def jas_cube(shared_data: Path) -> Path:
    """GreenEarthNet cube of Portugal 2021 (with Contextformer reference predictions)."""
    return _shared("greenearthnet/JAS2021_minicube_0_29SND_39.29_-8.56.nc")


@pytest.fixture(scope="session")
def en21x_cube(shared_data: Path) -> Path:
    return _shared("earthnet2021x/minicube_29SND_39.17_-8.05_2017.nc")


@pytest.fixture(scope="session")
def earthnet2021_contexts(shared_data: Path) -> list[Path]:
    return sorted((shared_data / "earthnet2021" / "context").glob("*.npz"))


def pytest_terminal_summary(terminalreporter) -> None:
    """Say loudly, last, when tests were skipped because ../shared/data is not beside the checkout: a green
    run then has not exercised the real data (CI sets VEGEDIFF_REQUIRE_SHARED_DATA=1 so it cannot pass so)."""
    missing = [r for r in terminalreporter.stats.get("skipped", [])
               if isinstance(r.longrepr, tuple) and "real data not found" in str(r.longrepr[2])]
    if missing:
        terminalreporter.write_line(
            f"WARNING: {len(missing)} test(s) skipped: real data not found at {SHARED_DATA}. Put the shared "
            "data there (or run in CI, which requires it) for a run that tests the real cubes.",
            yellow=True, bold=True)


def all_shared_cubes() -> list[Path]:
    """Every cube-like file in ../shared/data, for parametrised round-trip tests."""
    if not SHARED_DATA.exists():
        return []
    return sorted(
        [*SHARED_DATA.glob("greenearthnet/*.nc"), *SHARED_DATA.glob("earthnet2021x/*.nc"),
         *SHARED_DATA.glob("earthnet2021/context/*.npz"), *SHARED_DATA.glob("earthnet2021/target/*.npz")]
    )


class CliResult:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"CliResult(code={self.code}, out={self.out[-500:]!r}, err={self.err[-500:]!r})"


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """Weights of the tiny preset (seed 0), written once per test session; tests only read them."""
    from tests.forecast_fixtures import write_weights

    return write_weights(tmp_path_factory.mktemp("weights") / "tiny.safetensors")


@pytest.fixture
def cli(capsys):
    """Run `vegediff ARGS...` in-process; returns exit code, stdout and stderr."""

    def run(*args: str) -> CliResult:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture(autouse=True, scope="session")
def no_internet_weather(tmp_path_factory):
    """Nothing in the suite may reach the real Open-Meteo: its URLs point at a closed loopback port.

    Session-wide, so that module-scoped fixtures that run the CLI see it too. A test that wants
    weather starts tests/openmeteo_server.py and points these variables at it (its own monkeypatch).
    """
    with pytest.MonkeyPatch.context() as monkeypatch:
        _offline_weather(monkeypatch, tmp_path_factory)
        yield


def _offline_weather(monkeypatch, tmp_path_factory) -> None:
    monkeypatch.setenv("VEGEDIFF_OPEN_METEO_ARCHIVE_URL", "http://127.0.0.1:9/v1/archive")
    monkeypatch.setenv("VEGEDIFF_OPEN_METEO_FORECAST_URL", "http://127.0.0.1:9/v1/forecast")
    monkeypatch.setenv("VEGEDIFF_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("OPEN_METEO_API_KEY", raising=False)
    # The suite's other tests predate downloaded weather: they run as `--meteo none --weather none`
    # (the variables set those options' defaults); the weather tests delete them to test `auto`.
    monkeypatch.setenv("VEGEDIFF_METEO", "none")
    monkeypatch.setenv("VEGEDIFF_WEATHER", "none")


@pytest.fixture(autouse=True)
def fresh_download_cache(monkeypatch, tmp_path_factory):
    """Each test starts with an empty download cache (a test's downloads never serve another's)."""
    monkeypatch.setenv("VEGEDIFF_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
