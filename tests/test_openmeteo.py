"""`prepare` with Open-Meteo's ERA5 archive over real HTTP (loopback server), against the ERA5 file path.

The loopback server (tests/openmeteo_server.py) serves real daily values: the E-OBS series of the
shared GreenEarthNet / EarthNet2021x minicubes, and xclim's real ERA5 sample; `era5_cf_file`
writes the same values as a CF-named ERA5 file for `prepare --era5`. Open-Meteo's JSON rounds
values (0.1 degC, 0.1 hPa, 0.1 mm, 0.1 m/s, 1 %, 0.01 MJ m-2), so the two paths agree within
half of those steps: TOLERANCE.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd
import pytest
import rasterio.warp

from vegediff_cli.config import METEO_VARS, SCL
from vegediff_cli.cube.netcdf import write_netcdf
from vegediff_cli.cube.readers import open_cube
from vegediff_cli.cube.schema import new_cube
from vegediff_cli.errors import RemoteError
from vegediff_cli.sources.daily_meteo import MeteoRequest
from vegediff_cli.sources.era5 import read_era5
from vegediff_cli.sources.http import RetryPolicy
from vegediff_cli.sources.openmeteo import OpenMeteo, lattice, read_archive

from .openmeteo_server import OpenMeteoServer, archive_from_cf_era5, archive_from_minicubes, era5_cf_file
from .stac_server import Fault
from .test_era5 import CF_SAMPLE

# Half of Open-Meteo's rounding step, per variable (qq: 0.005 MJ m-2 = 0.058 W m-2), plus float32 slack.
TOLERANCE = {"tg": 0.051, "tn": 0.051, "tx": 0.051, "rr": 0.051, "pp": 0.051, "hu": 0.51, "fg": 0.051, "qq": 0.06}
FAST = RetryPolicy(attempts=3, backoff=0.01, max_wait=0.05, timeout=0.5, connect_timeout=0.5)


def client_for(server: OpenMeteoServer, tmp_path: Path, **kwargs) -> OpenMeteo:
    return OpenMeteo(server.archive_url, server.forecast_url, policy=kwargs.pop("policy", FAST),
                     cache_dir=tmp_path / "cache", **kwargs)


def point_env(monkeypatch, server: OpenMeteoServer) -> None:
    monkeypatch.setenv("VEGEDIFF_OPEN_METEO_ARCHIVE_URL", server.archive_url)
    monkeypatch.setenv("VEGEDIFF_OPEN_METEO_FORECAST_URL", server.forecast_url)


def assert_channels_match(a, b, *, report: list | None = None) -> None:
    for var in METEO_VARS:
        x, y = a[f"eobs_{var}"].values, b[f"eobs_{var}"].values
        assert x.shape == y.shape and np.isfinite(x).any()
        assert np.array_equal(np.isnan(x), np.isnan(y)), var
        diff = float(np.nanmax(np.abs(x - y)))
        assert diff <= TOLERANCE[var], (var, diff)
        if report is not None:
            report.append((var, diff))


# --- the shared cubes and the bundled sample: both paths give the same 24 channels ----------------
@pytest.mark.parametrize("name", ["sample", "jas", "mjj"])
def test_prepare_through_open_meteo_matches_the_era5_path(name, cli, shared_data, monkeypatch, tmp_path):
    project = Path(__file__).resolve().parents[1]
    cube, minicubes = {
        "sample": (project / "sample_data" / "29SND_2017_sample.nc", [shared_data / "earthnet2021x/minicube_29SND_39.17_-8.05_2017.nc"]),
        "jas": (shared_data / "greenearthnet/JAS2021_minicube_0_29SND_39.29_-8.56.nc", None),
        "mjj": (shared_data / "greenearthnet/MJJ2021_minicube_241_34VCL_59.04_17.96.nc", None),
    }[name]
    archive = archive_from_minicubes(minicubes or [cube], missing_as={"fg": 2.7})  # EarthNet2021x has no wind
    days = archive.data["time"].values
    era5 = era5_cf_file(archive, tmp_path / "era5.nc", start=str(days[0])[:10], end=str(days[-1])[:10])
    with OpenMeteoServer(archive) as server:
        point_env(monkeypatch, server)
        result = cli("prepare", "--input", cube, "--meteo", "open-meteo", "--output", tmp_path / "om.nc", "--json", "--quiet")
        assert result.code == 0, result
        requests = server.requests("/v1/archive")
    assert len(requests) == 1 and "models=era5" in requests[0].path and "cell_selection=nearest" in requests[0].path
    assert cli("prepare", "--input", cube, "--era5", era5, "--output", tmp_path / "e5.nc", "--quiet").code == 0
    via_api, via_file = open_cube(tmp_path / "om.nc"), open_cube(tmp_path / "e5.nc")
    assert via_api.attrs["meteo_source"] == "open-meteo era5" and "CC BY 4.0" in via_api.attrs["meteo_attribution"]
    assert via_api.attrs["meteo_layout"] == "series"  # a 2.56 km cube lies within one ERA5 cell
    assert json.loads(result.out)["meteo_source"] == "open-meteo era5"
    assert_channels_match(via_api, via_file)


def test_real_era5_sample_through_the_api_matches_the_file(shared_data, tmp_path):
    """xclim's real ERA5 series of Victoria, 1991: daily values through HTTP equal the file's within rounding."""
    cf = shared_data / CF_SAMPLE
    request = MeteoRequest(days=pd.date_range("1991-06-01", periods=60, freq="D"), bbox=(-123.16, 48.49, -123.14, 48.51))
    from_file = read_era5([cf], request)
    with OpenMeteoServer(archive_from_cf_era5(cf, location="Victoria")) as server:
        from_api = read_archive(request, lon=[-123.15], lat=[48.5], client=client_for(server, tmp_path))
    point = from_api.interp(latitude=48.5, longitude=-123.15)
    for var in METEO_VARS:
        expected = from_file[var].isel(location=0).values
        assert np.nanmax(np.abs(point[var].values - expected)) <= TOLERANCE[var], var
    # a hand check: Victoria, 1991-06-01, tas 284.x K in the file -> tg in degC, to 0.1 as Open-Meteo writes it
    assert float(point["tg"].values[0]) == pytest.approx(round(float(from_file["tg"].values[0, 0]), 1), abs=1e-6)


# --- a tile-sized cube: the grid layout, interpolated between ERA5 cells like a gridded ERA5 file -------
def raw_cube(path: Path, *, lon: float, lat: float, dates: list[str], size: int = 16, pixel: float = 4000.0) -> Path:
    """A fetch-style raw cube of `size` x `size` pixels of `pixel` m (UTM) centred on lon/lat, all clear."""
    zone = int((lon + 180) // 6) + 1
    crs = f"EPSG:{32600 + zone}"
    (x,), (y,) = rasterio.warp.transform("EPSG:4326", crs, [lon], [lat])
    xs = round(x) - size * pixel / 2 + pixel / 2 + pixel * np.arange(size)
    ys = round(y) + size * pixel / 2 - pixel / 2 - pixel * np.arange(size)
    rng = np.random.default_rng(0)
    bands = np.round(np.array([0.03, 0.06, 0.04, 0.35], "float32")[None, :, None, None]
                     + 0.01 * rng.standard_normal((len(dates), 4, size, size)), 4).astype("float32")
    cube = new_cube(times=pd.DatetimeIndex(dates), y=ys, x=xs, crs=crs, bands=bands,
                    valid=np.ones((len(dates), size, size), bool), source="fetch")
    cube[SCL] = (("time", "y", "x"), np.full((len(dates), size, size), 4.0, "float32"), {})
    write_netcdf(cube, path)
    return path


def test_tile_sized_cube_gets_the_grid_layout_matching_the_era5_file(cli, jas_cube, monkeypatch, tmp_path):
    """64 km cube: Open-Meteo is asked for the ERA5 cells around the grid nodes; the nodes match --era5 FILE."""
    monkeypatch.delenv("VEGEDIFF_METEO")  # the default: --meteo auto
    archive = archive_from_minicubes([jas_cube], lat_gradient=2.0)  # 2 degC per degree north: interpolation shows
    era5 = era5_cf_file(archive, tmp_path / "era5.nc", start="2021-05-10", end="2021-10-06")
    raw = raw_cube(tmp_path / "raw.nc", lon=-8.56, lat=39.29, dates=["2021-06-28", "2021-07-03", "2021-07-08"])
    with OpenMeteoServer(archive) as server:
        point_env(monkeypatch, server)
        result = cli("prepare", "--input", raw, "--output", tmp_path / "om.nc", "--json", "--quiet")  # --meteo auto
        assert result.code == 0, result
        cells = sum(len(parse_qs(urlparse(r.path).query)["latitude"][0].split(",")) for r in server.requests("latitude="))
    assert cli("prepare", "--input", raw, "--era5", era5, "--output", tmp_path / "e5.nc", "--quiet").code == 0
    via_api, via_file = open_cube(tmp_path / "om.nc"), open_cube(tmp_path / "e5.nc")
    assert via_api.attrs["meteo_layout"] == "grid" and via_api["eobs_tg"].dims == ("time", "stat", "meteo_y", "meteo_x")
    assert via_api.sizes["meteo_y"] == 4 and via_api.sizes["meteo_x"] == 4  # 64 km at 28 km spacing
    tg = via_api["eobs_tg"].values
    assert np.nanmax(tg[:, :, 0]) > np.nanmax(tg[:, :, -1])  # the northern nodes (row 0) are warmer
    assert_channels_match(via_api, via_file)
    assert cells == 30  # the 5 x 6 ERA5 cells (0.25 deg) around the 4 x 4 nodes, which span 84 km
    summary = json.loads(result.out)
    assert any("Open-Meteo ERA5 archive" in n for n in summary["notes"])


def test_lattice_encloses_every_point():
    lat, lon = lattice([-8.56, -8.01], [39.29, 39.71])
    assert lat[0] <= 39.29 and lat[-1] >= 39.71 and lon[0] <= -8.56 and lon[-1] >= -8.01
    assert np.allclose(np.diff(lat), 0.25) and len(lattice([0.0], [45.0])[0]) == 2  # on a grid line: still 2 x 2


# --- faults: retries, clear errors, no partial cube, resume from the cache ---------------------------
def _request(days: int = 30) -> MeteoRequest:
    return MeteoRequest(days=pd.date_range("2021-07-01", periods=days, freq="D"), bbox=(-8.57, 39.28, -8.55, 39.30))


@pytest.mark.parametrize("fault", [
    Fault(r"/v1/archive", status=500, times=2),
    Fault(r"/v1/archive", status=429, retry_after=0, times=1),
    Fault(r"/v1/archive", kind="truncate", times=1),
    Fault(r"/v1/archive", kind="stall", seconds=3.0, times=1),
])
def test_transient_faults_are_retried(fault, jas_cube, tmp_path):
    with OpenMeteoServer(archive_from_minicubes([jas_cube])) as server:
        server.add_fault(fault)
        daily = read_archive(_request(), lon=[-8.56], lat=[39.29], client=client_for(server, tmp_path))
        assert len(server.requests()) == fault.times + 1
    assert np.isfinite(daily["tg"].values).all()


def test_persistent_failure_is_remote_error_naming_the_endpoint(jas_cube, tmp_path):
    with OpenMeteoServer(archive_from_minicubes([jas_cube])) as server:
        server.add_fault(Fault(r"/v1/archive", status=503, times=None))
        with pytest.raises(RemoteError) as info:
            read_archive(_request(), lon=[-8.56], lat=[39.29], client=client_for(server, tmp_path))
    assert "Open-Meteo archive API failed after 3 tries (last: HTTP 503" in str(info.value)
    assert info.value.exit_code == 8 and "`meteo` none" in info.value.fix


def test_api_key_is_sent_but_never_shown(jas_cube, tmp_path):
    secret = "s3cr3t-key-0123"
    with OpenMeteoServer(archive_from_minicubes([jas_cube]), api_key=secret) as server:
        read_archive(_request(), lon=[-8.56], lat=[39.29], client=client_for(server, tmp_path, api_key=secret))
        with pytest.raises(RemoteError) as info:
            read_archive(_request(40), lon=[-8.56], lat=[39.29], client=client_for(server, tmp_path, api_key="wrong-key-9"))
    assert "HTTP 401" in str(info.value) and "wrong-key-9" not in str(info.value) and secret not in str(info.value)


def test_resume_reuses_the_requests_already_answered(jas_cube, monkeypatch, tmp_path):
    """A run that dies on its second request leaves the first in the cache; the rerun asks only for the rest."""
    monkeypatch.setattr("vegediff_cli.sources.openmeteo.LOCATIONS_PER_REQUEST", 2)
    with OpenMeteoServer(archive_from_minicubes([jas_cube])) as server:
        server.add_fault(Fault(r"latitude=39\.5", status=500, times=None))  # the second batch (northern cells)
        with pytest.raises(RemoteError):
            read_archive(_request(), lon=[-8.56], lat=[39.29], client=client_for(server, tmp_path))
        first_run = len(server.requests())
        server.faults.clear()
        client = client_for(server, tmp_path)
        read_archive(_request(), lon=[-8.56], lat=[39.29], client=client)
        assert client.transfer.cached == 1 and len(server.requests()) == first_run + 1


@pytest.mark.slow
def test_prepare_offline_is_exit_8_with_the_fix_and_no_cube(cli, shared_data, monkeypatch, tmp_path):
    """--meteo auto with the service out of reach (the suite's default: a closed port): exit 8, nothing written."""
    monkeypatch.delenv("VEGEDIFF_METEO")  # the default: --meteo auto
    raw = raw_cube(tmp_path / "raw.nc", lon=-8.56, lat=39.29, dates=["2021-06-28", "2021-07-03"], size=4, pixel=20.0)
    out = tmp_path / "cube.nc"
    result = cli("prepare", "--input", raw, "--output", out, "--quiet")
    assert result.code == 8, result
    error = result.err.strip().splitlines()[-1]  # after the retry warnings: one line naming the problem and the fix
    assert error.startswith("vegediff: error: Open-Meteo archive API failed after 5 tries (last: cannot connect to 127.0.0.1:9")
    assert "--meteo none" in error
    assert not out.exists() and not [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    assert cli("prepare", "--input", raw, "--output", out, "--meteo", "none", "--quiet").code == 0
    assert open_cube(out).attrs["meteo_source"] == "none"


def test_dates_outside_the_archive_are_a_clear_error(cli, jas_cube, monkeypatch, tmp_path):
    monkeypatch.delenv("VEGEDIFF_METEO")  # the default: --meteo auto
    archive = archive_from_minicubes([jas_cube])
    archive.last = pd.Timestamp("2021-06-30")  # the archive's lag: later days are not served yet
    raw = raw_cube(tmp_path / "raw.nc", lon=-8.56, lat=39.29, dates=["2021-06-28", "2021-07-03"], size=4, pixel=20.0)
    with OpenMeteoServer(archive) as server:
        point_env(monkeypatch, server)
        result = cli("prepare", "--input", raw, "--output", tmp_path / "c.nc", "--quiet")
    assert result.code == 8 and len(result.err.strip().splitlines()) == 1, result
    assert "refused the request: HTTP 400 (Parameter 'start_date' is out of allowed range" in result.err
