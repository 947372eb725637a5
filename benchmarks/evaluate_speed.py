"""Wall time and peak memory of `vegediff evaluate` on a large cube with a member forecast.

Writes a synthetic cube (default 2048 x 2048 px, 30 frames every 5 days, vegetation-like NDVI
seasons, blocky clouds, WorldCover classes) and a forecast.nc with --members members, both
generated lazily (dask) through the project's writer, then runs `vegediff evaluate --no-plots`
and `vegediff evaluate` (figures) in child processes and prints wall time and peak resident
memory beside the size the forecast takes in memory. Nothing here is a test: it prints figures.

    python benchmarks/evaluate_speed.py [--size 2048] [--members 8]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from vegediff_cli.config import BANDS, LANDCOVER, VALID
from vegediff_cli.cube.netcdf import write_netcdf
from vegediff_cli.cube.schema import BAND_LONG_NAMES, finalise

FRAMES, HORIZON = 30, 20


def synthetic_inputs(folder: Path, *, size: int, members: int, seed: int = 0) -> tuple[Path, Path, float]:
    """cube.nc and forecast.nc; returns the forecast's in-memory size in GiB."""
    state = da.random.RandomState(seed)
    chunks = (1, 512, 512)
    times = pd.date_range("2022-04-03", periods=FRAMES, freq="5D")
    season = 0.45 + 0.3 * np.sin(np.linspace(0, np.pi, FRAMES))  # NDVI rises and falls
    yy, xx = da.meshgrid(da.linspace(0, 1, size, chunks=512), da.linspace(0, 1, size, chunks=512), indexing="ij")
    ndvi = da.stack([s + 0.1 * yy - 0.05 * xx for s in season]).rechunk(chunks)
    ndvi = ndvi + state.normal(0, 0.03, size=ndvi.shape, chunks=chunks)
    red = 0.05 + 0.0 * ndvi
    nir = red * (1 + ndvi) / (1 - ndvi)
    bands = {"s2_B02": red * 0.8, "s2_B03": red * 1.1, "s2_B04": red, "s2_B8A": nir}
    data_vars = {b: (("time", "y", "x"), bands[b].astype("float32"), {"long_name": BAND_LONG_NAMES[b]}) for b in BANDS}
    cells = state.random_sample((FRAMES, size // 64, size // 64), chunks=(1, 8, 8)) < 0.25
    cloudy = da.repeat(da.repeat(cells, 64, axis=1), 64, axis=2).rechunk(chunks)
    data_vars[VALID] = (("time", "y", "x"), (~cloudy).astype("uint8"), {})
    classes = np.array([10, 20, 30, 40, 50], dtype="float32")
    landcover = classes[(np.add.outer(np.arange(size) // 97, np.arange(size) // 131)) % classes.size]
    data_vars[LANDCOVER] = (("y", "x"), landcover, {})
    coords = {"time": times.as_unit("ns"), "y": 5_000_000.0 - 10 - 20 * np.arange(size),
              "x": 400_000.0 + 10 + 20 * np.arange(size)}
    cube = finalise(xr.Dataset(data_vars, coords=coords), crs="EPSG:32632", source="prepare")
    write_netcdf(cube, folder / "cube.nc")

    target = ndvi[FRAMES - HORIZON:]
    member_values = da.stack([target + state.normal(0, 0.05, size=target.shape, chunks=chunks) for _ in range(members)])
    forecast = xr.Dataset(
        {"ndvi_pred": (("time", "y", "x"), member_values.mean(axis=0).astype("float32")),
         "ndvi_member": (("member", "time", "y", "x"), member_values.astype("float32"))},
        coords={"member": np.arange(members), "time": times[FRAMES - HORIZON:].as_unit("ns"),
                "y": coords["y"], "x": coords["x"]},
        attrs={"members": members},
    ).rio.write_crs("EPSG:32632")
    write_netcdf(forecast, folder / "forecast.nc")
    return folder / "cube.nc", folder / "forecast.nc", (members + 1) * HORIZON * size * size * 4 / 2**30


def run_evaluate(cube: Path, forecast: Path, out: Path, *extra: str) -> tuple[float, float]:
    """Peak RSS (MiB) and wall time (s) of one `vegediff evaluate` child process."""
    script = (
        "import resource, sys; from vegediff_cli.cli.app import main; code = main(sys.argv[1:]); "
        "print('PEAK_KIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(code)"
    )
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script, "evaluate", "--input", str(cube), "--forecast", str(forecast),
                           "--output", str(out), "--quiet", *extra], capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"evaluate failed ({done.returncode}): {done.stderr.strip()}")
    peak_kib = int(next(line.split()[1] for line in done.stderr.splitlines() if line.startswith("PEAK_KIB")))
    return peak_kib / 1024, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="pixels per side")
    parser.add_argument("--members", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vegediff-evaluate-bench-") as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        cube, forecast, gib = synthetic_inputs(folder, size=args.size, members=args.members)
        print(f"inputs: {args.size} x {args.size} px, {FRAMES} frames, {args.members} members "
              f"(forecast {gib:.2f} GiB in memory), written in {time.perf_counter() - start:.0f} s")
        for label, extra in (("no figures", ("--no-plots",)), ("with figures", ())):
            peak, wall = run_evaluate(cube, forecast, folder / f"out-{len(extra)}", *extra)
            print(f"evaluate ({label}): {wall:6.1f} s wall, peak RSS {peak:7.0f} MiB")


if __name__ == "__main__":
    main()
