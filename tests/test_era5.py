"""ERA5 -> E-OBS conversion, checked against values computed by hand from the real daily sample.

The shared sample (xclim's ERA5 test file, 5 Canadian cities, 1990-1993) is CF-named and daily.
The CDS hourly and daily-statistics flavours are tested with tiny files built here from the
same real daily values, with known sub-daily shapes whose daily statistics are exact.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from vegediff_cli.errors import CorruptInputError, GeoreferenceError, MissingVariableError, UsageError
from vegediff_cli.sources.daily_meteo import MeteoRequest, to_eobs_units
from vegediff_cli.sources.era5 import cds_request, download_era5, read_era5, relative_humidity

CF_SAMPLE = "meteo/era5_daily_canadian_cities_1990-1993.nc"
HALIFAX = (-63.4, 44.5)
VICTORIA = (-123.15, 48.5)


def request_at(lon: float, lat: float, start: str, days: int, *, half_deg: float = 0.01) -> MeteoRequest:
    return MeteoRequest(days=pd.date_range(start, periods=days, freq="D"),
                        bbox=(lon - half_deg, lat - half_deg, lon + half_deg, lat + half_deg))


@pytest.fixture(scope="session")
def cf_sample(shared_data: Path) -> Path:
    path = shared_data / CF_SAMPLE
    if not path.exists():
        pytest.skip(f"{path} absent")
    return path


# --- builders of CDS-style files (tiny, derived from the real daily values of Victoria) ------------
def victoria_daily(cf_path: Path, start: str, days: int) -> xr.Dataset:
    with xr.open_dataset(cf_path) as ds:
        return ds.sel(location="Victoria").sel(time=slice(start, pd.Timestamp(start) + pd.Timedelta(days=days - 1))).load()


def cds_hourly_file(
    path: Path, cf_path: Path, *, start: str = "1991-07-01", days: int = 3,
    lats=(48.75, 48.5, 48.25), lons=(-123.5, -123.25, -123.0),
    closing_midnight: bool = True, t2m_offset: float = 0.0, t2m_units: str = "K", msl_scale: float = 1.0,
    lon_gradient_k_per_deg: float = 0.0, label_start: str | None = None,
) -> Path:
    """A new-CDS style hourly file (dim valid_time) whose daily statistics are known exactly.

    t2m = tas + A cos(2 pi (h - 15) / 24), A = (tasmax - tasmin) / 2: mean tas, min tas - A, max tas + A.
    u10, v10 turn full circle at speed sfcWind: the mean speed is sfcWind, the mean vector ~0.
    tp: the whole day's rain (pr x 86400 s, in m) sits in the step ending at the next midnight.
    ssrd: rsds x 86400 J m-2 spread over the steps ending 07:00..18:00: the daily mean flux is rsds.
    `label_start` dates the file elsewhere in time (Victoria's 1991 weather as another year's).
    """
    daily = victoria_daily(cf_path, start, days)
    steps = pd.date_range(start, periods=days * 24 + (1 if closing_midnight else 0), freq="h")
    n = len(steps)
    day_of = np.minimum(((steps - steps[0]) // pd.Timedelta(days=1)).astype(int), days - 1)
    acc_day = ((steps - pd.Timedelta(hours=1) - steps[0]) // pd.Timedelta(days=1)).astype(int)
    hour = steps.hour.values
    pick = {name: daily[name].values.astype("float64") for name in daily.data_vars}
    amplitude = (pick["tasmax"] - pick["tasmin"]) / 2.0
    t2m = pick["tas"][day_of] + amplitude[day_of] * np.cos(2 * np.pi * (hour - 15) / 24.0) + t2m_offset
    speed = pick["sfcWind"][day_of]
    tp = np.zeros(n)
    ssrd = np.zeros(n)
    for i, step in enumerate(steps):
        d = acc_day[i]
        if 0 <= d < days:
            if step.hour == 0:
                tp[i] = pick["pr"][d] * 86400.0 / 1000.0
            if 7 <= step.hour <= 18:
                ssrd[i] = pick["rsds"][d] * 86400.0 / 12.0
    shape = (n, len(lats), len(lons))
    gradient = lon_gradient_k_per_deg * (np.asarray(lons) - np.mean(lons))[None, None, :]

    def field(series, *, extra=0.0):
        return (np.broadcast_to(np.asarray(series, dtype="float64")[:, None, None], shape) + extra).astype("float32")

    ds = xr.Dataset(
        {
            "t2m": (("valid_time", "latitude", "longitude"), field(t2m, extra=gradient), {"units": t2m_units, "long_name": "2 metre temperature"}),
            "d2m": (("valid_time", "latitude", "longitude"), field(pick["tdps"][day_of]), {"units": "K"}),
            "msl": (("valid_time", "latitude", "longitude"), field(pick["psl"][day_of] * msl_scale), {"units": "Pa"}),
            "u10": (("valid_time", "latitude", "longitude"), field(speed * np.cos(2 * np.pi * hour / 24.0)), {"units": "m s**-1"}),
            "v10": (("valid_time", "latitude", "longitude"), field(speed * np.sin(2 * np.pi * hour / 24.0)), {"units": "m s**-1"}),
            "tp": (("valid_time", "latitude", "longitude"), field(tp), {"units": "m", "GRIB_stepType": "accum"}),
            "ssrd": (("valid_time", "latitude", "longitude"), field(ssrd), {"units": "J m**-2", "GRIB_stepType": "accum"}),
        },
        coords={
            "valid_time": steps + (pd.Timestamp(label_start) - pd.Timestamp(start) if label_start else pd.Timedelta(0)),
            "latitude": np.asarray(lats, dtype="float64"), "longitude": np.asarray(lons, dtype="float64"),
            "number": 0, "expver": ("valid_time", np.full(n, "0001")),
        },
        attrs={"GRIB_centre": "ecmf", "Conventions": "CF-1.7", "institution": "European Centre for Medium-Range Weather Forecasts"},
    )
    ds.to_netcdf(path)
    return path


def victoria_expected(cf_path: Path, start: str, days: int) -> dict[str, np.ndarray]:
    """The E-OBS values of the synthetic hourly days, computed by hand from the daily inputs."""
    d = victoria_daily(cf_path, start, days)
    tas, tmin, tmax = (d[v].values.astype("float64") for v in ("tas", "tasmin", "tasmax"))
    amplitude = (tmax - tmin) / 2.0
    hours = np.arange(24)
    hu = []
    for k in range(days):
        temps = tas[k] + amplitude[k] * np.cos(2 * np.pi * (hours - 15) / 24.0) - 273.15
        dew = d["tdps"].values[k] - 273.15
        hu.append(np.mean([100 * math.exp(17.625 * dew / (243.04 + dew) - 17.625 * t / (243.04 + t)) for t in temps]))
    return {
        "tg": tas - 273.15, "tn": tas - amplitude - 273.15, "tx": tas + amplitude - 273.15,
        "rr": d["pr"].values * 86400.0, "pp": d["psl"].values / 100.0, "hu": np.array(hu),
        "fg": d["sfcWind"].values, "qq": d["rsds"].values,
    }


# --- CF-named daily (the real sample) ------------------------------------------------------------
def test_cf_daily_sample_matches_hand_computed_values(cf_sample: Path, caplog):
    caplog.set_level(logging.WARNING)
    daily = read_era5([cf_sample], request_at(*HALIFAX, "1990-01-01", 5))
    first = daily.isel(time=0, location=0)
    # Halifax 1990-01-01 as stored in the file, converted by hand:
    assert float(first["tg"]) == pytest.approx(277.5556640625 - 273.15, abs=1e-6)
    assert float(first["tn"]) == pytest.approx(273.89471435546875 - 273.15, abs=1e-6)
    assert float(first["tx"]) == pytest.approx(279.677001953125 - 273.15, abs=1e-6)
    assert float(first["rr"]) == pytest.approx(0.00034688800224103034 * 86400, rel=1e-6)  # kg m-2 s-1 -> mm/day = 29.97
    assert float(first["pp"]) == pytest.approx(99728.0 / 100, abs=1e-6)  # psl Pa -> hPa
    assert float(first["hu"]) == pytest.approx(0.9512665271759033 * 100, abs=1e-5)  # hurs 0-1 -> %
    assert float(first["qq"]) == pytest.approx(9.700493812561035, abs=1e-6)
    assert float(first["fg"]) == pytest.approx(10.807148933410645, abs=1e-6)
    # hurs has units '' in this file: the range tells it is a fraction, and the log says so.
    assert "hurs" in caplog.text and "converted" in caplog.text
    assert daily.sizes["time"] == 5 and list(daily.data_vars) == ["tg", "tn", "tx", "rr", "pp", "hu", "fg", "qq"]


def test_magnus_agrees_with_the_samples_humidity(cf_sample: Path):
    """Our Magnus humidity from tas/tdps vs xclim's (Sonntag 1990) hurs in the same file."""
    t, td = 277.5556640625 - 273.15, 276.84490966796875 - 273.15
    by_hand = 100 * math.exp(17.625 * td / (243.04 + td) - 17.625 * t / (243.04 + t))
    assert float(relative_humidity(np.float64(t), np.float64(td))) == pytest.approx(by_hand, abs=1e-9)
    assert by_hand == pytest.approx(95.13, abs=0.1)  # the file's hurs: 0.9513
    with xr.open_dataset(cf_sample) as ds:
        ours = relative_humidity(ds["tas"].values - 273.15, ds["tdps"].values - 273.15)
        theirs = ds["hurs"].values * 100
    assert np.mean(np.abs(ours - theirs)) < 0.1  # 0.03 % RH: different saturation formulas, same physics


def test_cf_daily_outside_the_period_names_the_missing_days(cf_sample: Path):
    with pytest.raises(GeoreferenceError, match=r"covers 1990-01-01\.\.1993-12-31.*2021-06-24\.\.2021-06-30.*supply meteorology"):
        read_era5([cf_sample], request_at(*HALIFAX, "2021-06-24", 7))


def test_cf_daily_far_from_every_location(cf_sample: Path):
    portugal = request_at(-8.56, 39.29, "1991-06-01", 5)
    with pytest.raises(GeoreferenceError, match=r"nearest location .* km from the cube centre"):
        read_era5([cf_sample], portugal)


# --- CDS hourly -------------------------------------------------------------------------------------
def test_cds_hourly_conversion(cf_sample: Path, tmp_path: Path):
    path = cds_hourly_file(tmp_path / "era5_hourly.nc", cf_sample, start="1991-07-01", days=3)
    daily = read_era5([path], request_at(*VICTORIA, "1991-07-01", 3))
    expected = victoria_expected(cf_sample, "1991-07-01", 3)
    for var, values in expected.items():
        got = daily[var].sel(latitude=48.5, longitude=-123.25).values
        np.testing.assert_allclose(got, values, rtol=1e-5, atol=2e-3, err_msg=var)
    # Day 1 of Victoria has rain; the step closing it is dated the next midnight and must count for day 1.
    assert expected["rr"][0] > 0.1


def test_cds_hourly_without_closing_midnight_reports_the_last_day(cf_sample: Path, tmp_path: Path):
    path = cds_hourly_file(tmp_path / "era5_hourly.nc", cf_sample, days=3, closing_midnight=False)
    with pytest.raises(GeoreferenceError, match=r"1991-07-03.*00:00 step of the following day"):
        read_era5([path], request_at(*VICTORIA, "1991-07-01", 3))


def test_cds_hourly_area_not_covered(cf_sample: Path, tmp_path: Path):
    path = cds_hourly_file(tmp_path / "era5_hourly.nc", cf_sample, days=2)
    with pytest.raises(GeoreferenceError, match=r"covers lon -123\.62\.\.-122\.88.*CDS 'area'"):
        read_era5([path], request_at(-122.0, 48.5, "1991-07-01", 2))


def test_cds_hourly_celsius_labelled_kelvin_is_converted_with_a_warning(cf_sample: Path, tmp_path: Path, caplog):
    caplog.set_level(logging.WARNING)
    path = cds_hourly_file(tmp_path / "era5_hourly.nc", cf_sample, days=2, t2m_offset=-273.15, t2m_units="K")
    daily = read_era5([path], request_at(*VICTORIA, "1991-07-01", 2))
    expected = victoria_expected(cf_sample, "1991-07-01", 2)
    np.testing.assert_allclose(daily["tg"].sel(latitude=48.5, longitude=-123.25).values, expected["tg"], atol=2e-3)
    assert "t2m" in caplog.text and "'degC'" in caplog.text
    assert "t2m" in daily.attrs["meteo_unit_notes"]


def test_pressure_in_hpa_labelled_pa_is_converted(cf_sample: Path, tmp_path: Path, caplog):
    path = cds_hourly_file(tmp_path / "era5_hourly.nc", cf_sample, days=2, msl_scale=0.01)
    daily = read_era5([path], request_at(*VICTORIA, "1991-07-01", 2))
    assert 1010 < float(daily["pp"].mean()) < 1025
    assert "msl" in daily.attrs["meteo_unit_notes"]


def test_implausible_temperature_is_a_clear_error(cf_sample: Path, tmp_path: Path):
    path = cds_hourly_file(tmp_path / "era5_hourly.nc", cf_sample, days=2, t2m_offset=5000.0)
    with pytest.raises(CorruptInputError, match=r"t2m .* not a plausible temperature.*check the variable"):
        read_era5([path], request_at(*VICTORIA, "1991-07-01", 2))


def test_hourly_file_missing_a_variable(cf_sample: Path, tmp_path: Path):
    path = cds_hourly_file(tmp_path / "full.nc", cf_sample, days=2)
    xr.open_dataset(path).load().drop_vars("ssrd").to_netcdf(tmp_path / "no_ssrd.nc")
    with pytest.raises(MissingVariableError, match=r"lacks ssrd \(needed for qq\)"):
        read_era5([tmp_path / "no_ssrd.nc"], request_at(*VICTORIA, "1991-07-01", 2))


def test_six_hourly_file_is_refused(cf_sample: Path, tmp_path: Path):
    path = cds_hourly_file(tmp_path / "full.nc", cf_sample, days=2)
    xr.open_dataset(path).load().isel(valid_time=slice(0, None, 6)).to_netcdf(tmp_path / "six.nc")
    with pytest.raises(UsageError, match="need every hour"):
        read_era5([tmp_path / "six.nc"], request_at(*VICTORIA, "1991-07-01", 2))


def test_cds_zip_of_instant_and_accum_files(cf_sample: Path, tmp_path: Path):
    import zipfile

    full = xr.open_dataset(cds_hourly_file(tmp_path / "full.nc", cf_sample, days=2)).load()
    full[["tp", "ssrd"]].to_netcdf(tmp_path / "data_stream-oper_stepType-accum.nc")
    full.drop_vars(["tp", "ssrd"]).to_netcdf(tmp_path / "data_stream-oper_stepType-instant.nc")
    archive = tmp_path / "era5_download.nc"  # the CDS names it .nc but sends a zip
    with zipfile.ZipFile(archive, "w") as zf:
        for name in ("data_stream-oper_stepType-accum.nc", "data_stream-oper_stepType-instant.nc"):
            zf.write(tmp_path / name, name)
    daily = read_era5([archive], request_at(*VICTORIA, "1991-07-01", 2))
    expected = victoria_expected(cf_sample, "1991-07-01", 2)
    np.testing.assert_allclose(daily["rr"].sel(latitude=48.5, longitude=-123.25).values, expected["rr"], rtol=1e-5, atol=1e-4)


# --- CDS daily statistics ---------------------------------------------------------------------------
def test_cds_daily_statistics(cf_sample: Path, tmp_path: Path):
    """Daily statistics files (one per statistic): rr = 24 x mean(tp), qq = mean(ssrd) / 3600 s."""
    hourly = xr.open_dataset(cds_hourly_file(tmp_path / "hourly.nc", cf_sample, days=3)).load()
    hourly = hourly.drop_vars(["number", "expver"])
    instant = hourly.drop_vars(["tp", "ssrd"]).isel(valid_time=slice(0, 72))
    accum = hourly[["tp", "ssrd"]].isel(valid_time=slice(1, 73))  # the CDS shifts accumulations by one hour
    day = pd.DatetimeIndex(instant["valid_time"].values).floor("D")
    for stat, how in (("mean", "mean"), ("minimum", "min"), ("maximum", "max")):
        inst = getattr(instant.assign_coords(valid_time=day).groupby("valid_time"), how)()
        acc = getattr(accum.assign_coords(valid_time=day).groupby("valid_time"), how)()
        xr.merge([inst, acc]).to_netcdf(tmp_path / f"era5_daily_{stat}_1991-07.nc")
    files = sorted(tmp_path.glob("era5_daily_*.nc"))
    daily = read_era5(files, request_at(*VICTORIA, "1991-07-01", 3))
    expected = victoria_expected(cf_sample, "1991-07-01", 3)
    at = {"latitude": 48.5, "longitude": -123.25}
    for var in ("tg", "tn", "tx", "rr", "pp", "qq"):
        np.testing.assert_allclose(daily[var].sel(**at).values, expected[var], rtol=1e-5, atol=2e-3, err_msg=var)
    # hu from daily means and fg from mean components are approximations, documented as such.
    np.testing.assert_allclose(daily["hu"].sel(**at).values, expected["hu"], atol=1.5)
    assert "underestimates" in daily.attrs["meteo_unit_notes"]
    with pytest.raises(MissingVariableError, match="daily_minimum"):
        read_era5([f for f in files if "minimum" not in f.name], request_at(*VICTORIA, "1991-07-01", 3))


# --- units, download ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("values", "units", "quantity", "expected", "warns"),
    [
        ([280.0, 290.0], "K", "temperature", [6.85, 16.85], False),
        ([6.85, 16.85], "K", "temperature", [6.85, 16.85], True),  # Celsius labelled Kelvin
        ([101325.0], "hPa", "pressure", [1013.25], True),  # Pa labelled hPa
        ([0.0, 0.012], "m", "precipitation", [0.0, 12.0], False),
        ([0.0, 12.0, 80.0], "m", "precipitation", [0.0, 12.0, 80.0], True),  # mm labelled m (80 m/day is impossible)
        ([0.35, 0.97], "%", "humidity", [35.0, 97.0], True),  # fraction labelled %
    ],
)
def test_unit_detection_by_range(values, units, quantity, expected, warns, caplog):
    caplog.set_level(logging.WARNING)
    notes: list[str] = []
    out = to_eobs_units(xr.DataArray(values, attrs={"units": units}), quantity, name="x", source="test.nc", notes=notes)
    np.testing.assert_allclose(out.values, expected, rtol=1e-9, atol=1e-9)
    assert bool(notes) is warns


def test_cds_request_covers_area_and_the_closing_midnight():
    request = request_at(-8.56, 39.29, "2021-06-24", 8)
    body = cds_request(request)
    north, west, south, east = body["area"]
    assert north >= 39.3 and south <= 39.28 and west <= -8.57 and east >= -8.55
    assert body["day"] == ["01", "02", "24", "25", "26", "27", "28", "29", "30"] and body["month"] == ["06", "07"]
    assert len(body["time"]) == 24 and "total_precipitation" in body["variable"]


def test_download_needs_cdsapi_and_credentials(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.cdsapirc here
    monkeypatch.delenv("CDSAPI_URL", raising=False)
    monkeypatch.delenv("CDSAPI_KEY", raising=False)
    with pytest.raises(UsageError, match=r"cdsapi|\.cdsapirc"):
        download_era5(request_at(*VICTORIA, "1991-07-01", 2), tmp_path / "era5.nc")
    assert not (tmp_path / "era5.nc").exists()
