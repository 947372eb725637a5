"""Peak memory of `vegediff prepare` on a large raw cube: it must stay bounded (out of core).

Writes a synthetic fetch-style raw cube (default 2048 x 2048 px, 24 irregular acquisitions over
four months, reflectance + SCL with clouds) chunk by chunk, then runs `vegediff prepare` on it in
a child process, once per --chunk-px value, and prints the child's peak resident memory next to
the size the data would take in memory. Nothing here is a test: it prints figures.

    python benchmarks/prepare_memory.py [--size 2048] [--acquisitions 24] [--chunk-px 1024 512]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from vegediff_cli.config import BANDS, SCL, VALID
from vegediff_cli.cube.netcdf import write_netcdf
from vegediff_cli.cube.schema import BAND_LONG_NAMES, finalise


def synthetic_raw_cube(path: Path, *, size: int, acquisitions: int, seed: int = 0) -> float:
    """A lazily generated raw cube written with the project's writer; returns its in-memory size in GiB."""
    rng = np.random.default_rng(seed)
    offsets = np.sort(rng.choice(np.arange(0, 5 * acquisitions), size=acquisitions, replace=False))
    times = pd.Timestamp("2022-04-01") + pd.to_timedelta(offsets, unit="D")
    chunks = (1, 512, 512)
    shape = (acquisitions, size, size)
    state = da.random.RandomState(seed)
    # Smooth fields (blocky cloud masks, gentle gradients) compress like real scenes do.
    yy, xx = da.meshgrid(da.linspace(0, 1, size, chunks=512), da.linspace(0, 1, size, chunks=512), indexing="ij")
    data_vars = {}
    for i, band in enumerate(BANDS):
        base = 0.03 + 0.1 * i + 0.05 * yy + 0.02 * xx
        noise = state.normal(0.0, 0.005, size=shape, chunks=chunks)
        values = (base[None] + noise).astype("float32").round(4)
        data_vars[band] = (("time", "y", "x"), values, {"long_name": BAND_LONG_NAMES[band], "units": "1"})
    cloud_cells = state.random_sample((acquisitions, size // 64, size // 64), chunks=(1, 8, 8)) < 0.3
    cloudy = da.repeat(da.repeat(cloud_cells, 64, axis=1), 64, axis=2).rechunk(chunks)
    scl = da.where(cloudy, 9, 4).astype("uint8")
    data_vars[SCL] = (("time", "y", "x"), scl, {"long_name": "Sentinel-2 scene classification"})
    data_vars[VALID] = (("time", "y", "x"), (scl == 4).astype("uint8"), {"long_name": "clear-sky valid observation flag"})
    coords = {"time": times.as_unit("ns"), "y": 5_000_000.0 - 10 - 20 * np.arange(size), "x": 400_000.0 + 10 + 20 * np.arange(size)}
    cube = finalise(xr.Dataset(data_vars, coords=coords), crs="EPSG:32632", source="fetch")
    write_netcdf(cube, path)
    return acquisitions * size * size * (4 * 4 + 2) / 2**30


def run_prepare(raw: Path, out: Path, chunk_px: int) -> tuple[float, float, dict]:
    """Peak RSS (MiB) and wall time (s) of one `vegediff prepare` child process."""
    # VmHWM is the child's own high-water mark; ru_maxrss would include the parent's pages at fork.
    script = (
        "import sys; from vegediff_cli.cli.app import main; code = main(sys.argv[1:]); "
        "hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0]; "
        "print('PEAK_KIB', hwm, file=sys.stderr); sys.exit(code)"
    )
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", script, "prepare", "--input", str(raw), "--output", str(out), "--chunk-px", str(chunk_px),
         "--json", "--quiet"], capture_output=True, text=True, check=False,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"prepare failed ({done.returncode}): {done.stderr.strip()}")
    peak_kib = int(next(line.split()[1] for line in done.stderr.splitlines() if line.startswith("PEAK_KIB")))
    return peak_kib / 1024, wall, json.loads(done.stdout)


def run_baseline() -> float:
    """Peak RSS (MiB) of the CLI doing nothing heavy: the cost of its imports."""
    script = (
        "import sys; from vegediff_cli.cli.app import main; code = main(['info', '--exit-codes', '--json']); "
        "hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0]; "
        "print('PEAK_KIB', hwm, file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return int(next(line.split()[1] for line in done.stderr.splitlines() if line.startswith("PEAK_KIB"))) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="pixels per side")
    parser.add_argument("--acquisitions", type=int, default=24)
    parser.add_argument("--chunk-px", type=int, nargs="+", default=[1024, 512])
    parser.add_argument("--keep", type=Path, default=None, help="folder to keep the files in (default: a temp folder)")
    parser.add_argument("--reuse", action="store_true", help="reuse the raw cube already in --keep")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vegediff-bench-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        raw = folder / "s2_raw.nc"
        start = time.perf_counter()
        if args.reuse and raw.exists():
            in_memory_gib = args.acquisitions * args.size**2 * 18 / 2**30
        else:
            in_memory_gib = synthetic_raw_cube(raw, size=args.size, acquisitions=args.acquisitions)
        print(f"raw cube: {args.size} x {args.size} px, {args.acquisitions} acquisitions, "
              f"{raw.stat().st_size / 2**20:.0f} MiB on disk, {in_memory_gib:.2f} GiB as float32 bands + uint8 masks "
              f"(ready in {time.perf_counter() - start:.0f} s)")
        baseline = run_baseline()
        print(f"baseline: `vegediff info --exit-codes` (imports only) peaks at {baseline:.0f} MiB")
        for chunk_px in args.chunk_px:
            out = folder / f"cube_{chunk_px}.nc"
            peak, wall, summary = run_prepare(raw, out, chunk_px)
            frames = summary["shape"]["time"]
            print(f"prepare --chunk-px {chunk_px}: peak RSS {peak:.0f} MiB, {wall:.0f} s wall, {frames} frames, "
                  f"clear fraction {summary['clear_fraction']:.3f}, output {out.stat().st_size / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
