"""Fetch under failure: server errors, rate limits, stalls, truncation, bad input, interruption.

Every case ends either in retry-then-success (the output still matches the source pixel for
pixel) or in one error line with the documented exit code, no output file, no temporaries,
and a rerun that resumes from the dates already finished.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import xarray as xr

from vegediff_cli.errors import (
    CorruptInputError,
    NoValidDataError,
    OutputError,
    RemoteError,
    RunInterrupted,
    UsageError,
)
from vegediff_cli.pipeline.fetch.parts import PartStore

from . import fixtures_stac
from .fixtures_stac import FAST, Served, assert_matches_source, build_29snd, cog_requests, window_29snd
from .stac_server import Fault, StacServer, wait_for

# pytest fixtures shared by the fetch tests
served_29snd = fixtures_stac.served_29snd
snd_cog_folder = fixtures_stac.snd_cog_folder

pytestmark = pytest.mark.filterwarnings("ignore:The 'shapely.ops.transform:DeprecationWarning")
TWO_DATES = ("2021-06-28", "2021-07-28")


def fetch(cli, served: Served, out: Path, *extra: str, start: str = TWO_DATES[0], end: str = TWO_DATES[1]):
    return cli("fetch", "--tile", "29SND", "--window", window_29snd(served), "--start", start, "--end", end,
               "--provider", "earth-search", "--stac-url", served.url, "--output", out, *FAST, "--json", *extra)


def cog_of(served: Served, date: str, band: str) -> str:
    """Regex matching the URL path of one band COG of the item kept for `date`."""
    item = next(i for i in served.built.kept_ids if i.split("_")[2] == date.replace("-", ""))
    return rf"/{item}/{band}\.tif"


def assert_clean_failure(result, code: int, out: Path, *words: str) -> None:
    assert result.code == code, result
    lines = [line for line in result.err.strip().splitlines() if line.startswith("vegediff: error")]
    assert len(lines) == 1 and "Traceback" not in result.err, result.err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not out.exists()
    leftovers = [p for p in out.parent.rglob("*") if ".partial-" in p.name]
    assert not leftovers, leftovers


def part_dates(out: Path) -> list[str]:
    parts = out.parent / f".{out.name}.parts"
    return sorted(p.stem for p in parts.glob("*.json")) if parts.exists() else []


# --- STAC API faults -----------------------------------------------------------------------
def test_search_500_twice_then_success(cli, served_29snd: Served, tmp_path: Path):
    served_29snd.server.add_fault(Fault(r"^/search", status=500, times=2, method="POST"))
    result = fetch(cli, served_29snd, tmp_path / "s2_raw.nc")
    assert result.code == 0, result
    assert [r.status for r in served_29snd.server.requests("^/search")][:3] == [500, 500, 200]
    with xr.open_dataset(tmp_path / "s2_raw.nc") as cube:
        assert assert_matches_source(cube, served_29snd.built, dates=list(TWO_DATES)) > 0


def test_search_429_honours_retry_after(cli, served_29snd: Served, tmp_path: Path):
    served_29snd.server.add_fault(Fault(r"^/search", status=429, retry_after=0.4, times=1, method="POST"))
    result = fetch(cli, served_29snd, tmp_path / "s2_raw.nc")  # --backoff 0.05: only Retry-After explains a wait
    assert result.code == 0, result
    limited, answered = served_29snd.server.requests("^/search")[:2]
    assert (limited.status, answered.status) == (429, 200)
    assert answered.at - limited.at >= 0.4


def test_search_500_forever_is_remote_error(cli, served_29snd: Served, tmp_path: Path):
    served_29snd.server.add_fault(Fault(r"^/search", status=500, times=None))
    out = tmp_path / "s2_raw.nc"
    result = fetch(cli, served_29snd, out)
    assert_clean_failure(result, RemoteError.exit_code, out, f"{served_29snd.url}/search", "HTTP 500", "3 tries")
    assert len(served_29snd.server.requests("^/search")) == 3
    assert cog_requests(served_29snd.server) == []


def test_search_stall_is_retried(cli, served_29snd: Served, tmp_path: Path):
    served_29snd.server.add_fault(Fault(r"^/search", kind="stall", seconds=5, times=1))
    result = fetch(cli, served_29snd, tmp_path / "s2_raw.nc", "--timeout", "0.5")
    assert result.code == 0, result


def test_truncated_search_page_is_retried(cli, served_29snd: Served, tmp_path: Path):
    served_29snd.server.add_fault(Fault(r"^/search", kind="truncate", times=1))
    result = fetch(cli, served_29snd, tmp_path / "s2_raw.nc")
    assert result.code == 0, result
    assert json.loads(result.out)["items_found"] == 3


def test_empty_search_is_no_valid_data(cli, served_29snd: Served, tmp_path: Path):
    out = tmp_path / "s2_raw.nc"
    result = fetch(cli, served_29snd, out, start="2020-01-01", end="2020-12-31")
    assert_clean_failure(result, NoValidDataError.exit_code, out, "no Sentinel-2 L2A items", "29SND", "widen")


def test_unknown_collection_is_usage_error(cli, served_29snd: Served, tmp_path: Path):
    out = tmp_path / "s2_raw.nc"
    result = fetch(cli, served_29snd, out, "--collection", "sentinel-2-l1c")
    assert_clean_failure(result, UsageError.exit_code, out, "sentinel-2-l1c", "--collection")


def test_not_a_stac_api_is_remote_error(cli, served_29snd: Served, tmp_path: Path):
    out = tmp_path / "s2_raw.nc"
    result = cli("fetch", "--tile", "29SND", "--start", "2021-06-28", "--end", "2021-07-28",
                 "--stac-url", f"{served_29snd.url}/nothing-here", "--output", out, *FAST)
    assert_clean_failure(result, RemoteError.exit_code, out, "HTTP 404", "--stac-url")


# --- bad input: no request is made -----------------------------------------------------------
@pytest.mark.parametrize("tile", ["99XYZ", "32UQDX", "T3"])
def test_unknown_tile_is_usage_error(cli, served_29snd: Served, tmp_path: Path, tile: str):
    out = tmp_path / "s2_raw.nc"
    result = cli("fetch", "--tile", tile, "--start", "2021-06-28", "--stac-url", served_29snd.url, "--output", out)
    assert_clean_failure(result, UsageError.exit_code, out, tile, "MGRS")
    assert served_29snd.server.log == []


@pytest.mark.parametrize(("start", "end", "words"), [
    ("2021-08-01", "2021-07-01", ("before --start",)),
    ("2021-13-01", "2021-12-31", ("'2021-13-01' is not a date", "YYYY-MM-DD")),
    ("2021-06-01", "June 2021", ("'June 2021' is not a date",)),
    ((datetime.now(UTC) + timedelta(days=3)).date().isoformat(), None, ("in the future",)),
    ("2021-06-01", (datetime.now(UTC) + timedelta(days=40)).date().isoformat(), ("in the future",)),
])
def test_impossible_dates_are_usage_errors(cli, served_29snd: Served, tmp_path: Path, start, end, words):
    out = tmp_path / "s2_raw.nc"
    args = ["fetch", "--tile", "29SND", "--start", start, "--stac-url", served_29snd.url, "--output", out]
    result = cli(*args, *(["--end", end] if end else []))
    assert_clean_failure(result, UsageError.exit_code, out, *words)
    assert served_29snd.server.log == []


# --- COG faults ----------------------------------------------------------------------------
def test_cog_500_and_429_are_retried(cli, served_29snd: Served, tmp_path: Path):
    server = served_29snd.server
    server.add_fault(Fault(cog_of(served_29snd, "2021-06-28", "B04"), status=500, times=3, method="GET"))
    server.add_fault(Fault(cog_of(served_29snd, "2021-07-28", "B8A"), status=429, retry_after=0.1, times=2))
    out = tmp_path / "s2_raw.nc"
    result = fetch(cli, served_29snd, out)
    assert result.code == 0, result
    assert [f.hits for f in server.faults] == [3, 2]
    with xr.open_dataset(out) as cube:
        assert assert_matches_source(cube, served_29snd.built, dates=list(TWO_DATES)) > 0


def test_cog_stall_is_retried(cli, served_29snd: Served, tmp_path: Path):
    served_29snd.server.add_fault(Fault(cog_of(served_29snd, "2021-07-28", "B02"), kind="stall", seconds=6,
                                        times=1, method="GET"))
    out = tmp_path / "s2_raw.nc"
    result = fetch(cli, served_29snd, out, "--timeout", "1")
    assert result.code == 0, result
    with xr.open_dataset(out) as cube:
        assert assert_matches_source(cube, served_29snd.built, dates=list(TWO_DATES)) > 0


def test_cog_body_cut_short_is_retried(cli, served_29snd: Served, tmp_path: Path):
    served_29snd.server.add_fault(Fault(cog_of(served_29snd, "2021-06-28", "SCL"), kind="truncate", times=2,
                                        method="GET"))
    out = tmp_path / "s2_raw.nc"
    result = fetch(cli, served_29snd, out)
    assert result.code == 0, result
    with xr.open_dataset(out) as cube:
        assert assert_matches_source(cube, served_29snd.built, dates=list(TWO_DATES)) > 0


def test_cog_500_forever_fails_cleanly_and_rerun_resumes(cli, served_29snd: Served, tmp_path: Path):
    server = served_29snd.server
    broken = cog_of(served_29snd, "2021-07-28", "B04")
    server.add_fault(Fault(broken, status=500, times=None))
    out = tmp_path / "s2_raw.nc"
    result = fetch(cli, served_29snd, out)
    assert_clean_failure(result, RemoteError.exit_code, out, "B04.tif", "HTTP 500", "rerun")
    assert part_dates(out) == ["2021-06-28"]  # the healthy date is kept, verified, for the rerun

    server.clear_faults()
    server.reset_log()
    again = fetch(cli, served_29snd, out)
    assert again.code == 0, again
    summary = json.loads(again.out)
    assert summary["dates_resumed"] == ["2021-06-28"] and summary["dates_fetched"] == ["2021-07-28"]
    assert {r.path.split("/")[-2] for r in cog_requests(server)} == {broken.split("/")[1]}
    with xr.open_dataset(out) as cube:
        assert assert_matches_source(cube, served_29snd.built, dates=list(TWO_DATES)) > 0
    assert part_dates(out) == []


def test_persistently_cut_transfer_is_remote_error(cli, served_29snd: Served, tmp_path: Path):
    served_29snd.server.add_fault(Fault(cog_of(served_29snd, "2021-06-28", "B03"), kind="truncate", times=None,
                                        method="GET"))
    out = tmp_path / "s2_raw.nc"
    result = fetch(cli, served_29snd, out)
    assert_clean_failure(result, RemoteError.exit_code, out, "B03.tif", "connection failed")


def test_truncated_cog_file_is_corrupt_input_and_rerun_resumes(cli, snd_cog_folder: Path, tmp_path: Path):
    with StacServer() as server:
        built = build_29snd(snd_cog_folder, server.url, tag="truncated/")
        server.catalogue = built.catalogue
        served = Served(server, built)
        item = next(i for i in built.kept_ids if "20210628" in i)
        cog = next(snd_cog_folder.glob(f"truncated/**/{item}/B8A.tif"))
        intact = cog.read_bytes()
        cog.write_bytes(intact[: len(intact) * 2 // 3])
        out = tmp_path / "s2_raw.nc"
        result = fetch(cli, served, out)
        assert_clean_failure(result, CorruptInputError.exit_code, out, "B8A.tif", "not a readable COG", "truncated")
        assert part_dates(out) == ["2021-07-28"]

        cog.write_bytes(intact)
        again = fetch(cli, served, out)
        assert again.code == 0, again
        assert json.loads(again.out)["dates_resumed"] == ["2021-07-28"]
        with xr.open_dataset(out) as cube:
            assert assert_matches_source(cube, built, dates=list(TWO_DATES)) > 0


def test_corrupt_part_is_fetched_again(cli, served_29snd: Served, tmp_path: Path):
    """A part whose bytes changed after its record was written is not trusted."""
    server = served_29snd.server
    server.add_fault(Fault(cog_of(served_29snd, "2021-07-28", "B04"), status=503, times=None))
    out = tmp_path / "s2_raw.nc"
    assert fetch(cli, served_29snd, out).code == RemoteError.exit_code
    part = out.parent / f".{out.name}.parts" / "2021-06-28.tif"
    data = bytearray(part.read_bytes())
    data[-100] ^= 0xFF
    part.write_bytes(bytes(data))
    server.clear_faults()
    again = fetch(cli, served_29snd, out)
    assert again.code == 0 and json.loads(again.out)["dates_resumed"] == []
    with xr.open_dataset(out) as cube:
        assert assert_matches_source(cube, served_29snd.built, dates=list(TWO_DATES)) > 0


def test_overlapping_runs_are_refused(cli, served_29snd: Served, tmp_path: Path):
    """Cron started the next run before the last one finished: the second waits for nothing and says so."""
    out = tmp_path / "s2_raw.nc"
    with PartStore(out).lock():
        result = fetch(cli, served_29snd, out)
    assert_clean_failure(result, OutputError.exit_code, out, "another vegediff run", f"pid {os.getpid()}")
    assert served_29snd.server.log == []
    assert fetch(cli, served_29snd, out).code == 0  # the lock went with its holder


# --- interruption --------------------------------------------------------------------------
def test_sigterm_leaves_no_partial_output_and_rerun_resumes(cli, served_29snd: Served, tmp_path: Path):
    """A real SIGTERM (as cron or systemd send it) while a COG read hangs, handled by the CLI's handler."""
    server = served_29snd.server
    stall = server.add_fault(Fault(cog_of(served_29snd, "2021-07-28", "B03"), kind="stall", seconds=60,
                                   times=None, method="GET"))
    out = tmp_path / "work" / "s2_raw.nc"
    sent = threading.Event()

    def terminate_when_stalled() -> None:
        if wait_for(lambda: stall.hits >= 1 and part_dates(out) == ["2021-06-28"], timeout=60):
            sent.set()
            os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    killer = threading.Thread(target=terminate_when_stalled, daemon=True)
    killer.start()
    try:
        result = fetch(cli, served_29snd, out, "--timeout", "1", "--retries", "20", "--workers", "2")
    finally:
        killer.join(timeout=70)
        signal.signal(signal.SIGTERM, previous)
    assert sent.is_set()
    assert_clean_failure(result, RunInterrupted.exit_code, out, "interrupted", "resumes")

    server.clear_faults()
    again = fetch(cli, served_29snd, out)
    assert again.code == 0, again
    assert json.loads(again.out)["dates_resumed"] == ["2021-06-28"]
    with xr.open_dataset(out) as cube:
        assert assert_matches_source(cube, served_29snd.built, dates=list(TWO_DATES)) > 0
