"""A cube of any size made of real 128 x 128 px chips: the shared GreenEarthNet / EarthNet2021x minicubes, tiled.

A full MGRS tile (5490 x 5490 px at 20 m) of real scenes is not in ../shared/data, so the speed
benchmark builds one: tile (i, j) of 128 px takes the 10 context frames (reflectance, valid mask)
and the static layers of one of the three shared minicubes (Portugal 2021, Sweden 2021 - very
cloudy -, Portugal 2017), turned by one of the 8 flips/rotations, so neighbouring chips differ.
The frames are put on the Portugal 2021 cube's first 10 frame dates; the grid is UTM 29N at 20 m
(real pixels, made-up georeference). Meteorology comes from `--weather <the Portugal 2021
minicube>`, as a user with a weather file would run it: the forecast is conditioned.

Pixels are generated chunk by chunk (dask) and written with the project's own cube writer, so
building a full tile holds a few hundred MB at a time (about 3 minutes on 2 cores).

    python benchmarks/mosaic.py --size 2048 -o mosaic2048.nc
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr

from vegediff_cli.config import BANDS, STATIC_LAYERS, VALID
from vegediff_cli.cube.netcdf import write_netcdf
from vegediff_cli.cube.readers import open_cube
from vegediff_cli.cube.schema import STATIC_ATTRS, new_cube

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SOURCES = ("greenearthnet/JAS2021_minicube_0_29SND_39.29_-8.56.nc",
           "greenearthnet/MJJ2021_minicube_241_34VCL_59.04_17.96.nc",
           "earthnet2021x/minicube_29SND_39.17_-8.05_2017.nc")
WEATHER = SHARED / SOURCES[0]  # the --weather file of forecasts of the mosaic
FRAMES = 10  # the model's context
TILE = 128
CHUNK = 512  # pixels per chunk side while building (a multiple of the writer's 256 px chunks)


def load_sources(shared: Path = SHARED) -> tuple[dict[str, np.ndarray], object]:
    """Per variable, the stacked (S, [T,] 128, 128) arrays of the source minicubes; and the frame dates."""
    cubes = [open_cube(shared / name) for name in SOURCES]
    arrays: dict[str, list[np.ndarray]] = {name: [] for name in (*BANDS, VALID, *STATIC_LAYERS)}
    for cube in cubes:
        for name in arrays:
            values = cube[name].isel(time=slice(0, FRAMES)) if "time" in cube[name].dims else cube[name]
            arrays[name].append(np.asarray(values.values, dtype="float32"))
    dates = cubes[0]["time"].values[:FRAMES]
    for cube in cubes:
        cube.close()
    return {name: np.stack(values) for name, values in arrays.items()}, dates


def _turn(values: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 flips/rotations of the last two axes."""
    values = np.rot90(values, k % 4, axes=(-2, -1))
    return values[..., ::-1] if k >= 4 else values


def _tiles(source: np.ndarray, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    """Pixels [rows) x [cols) of the mosaic of `source` (S, ..., 128, 128)."""
    lead = source.shape[1:-2]
    out = np.empty((*lead, rows[1] - rows[0], cols[1] - cols[0]), dtype="float32")
    for i in range(rows[0] // TILE, (rows[1] - 1) // TILE + 1):
        for j in range(cols[0] // TILE, (cols[1] - 1) // TILE + 1):
            tile = _turn(source[(7 * i + 3 * j) % len(source)], (i + 2 * j) % 8)
            r0, r1 = max(rows[0], i * TILE), min(rows[1], (i + 1) * TILE)
            c0, c1 = max(cols[0], j * TILE), min(cols[1], (j + 1) * TILE)
            out[..., r0 - rows[0]:r1 - rows[0], c0 - cols[0]:c1 - cols[0]] = \
                tile[..., r0 - i * TILE:r1 - i * TILE, c0 - j * TILE:c1 - j * TILE]
    return out


def _lazy(source: np.ndarray, size: int) -> da.Array:
    """The mosaic of `source` as a dask array (..., size, size) in CHUNK x CHUNK pieces."""
    lead = source.shape[1:-2]
    chunks = (*[(n,) for n in lead], *[tuple(min(CHUNK, size - s) for s in range(0, size, CHUNK))] * 2)

    def block(block_info=None):
        (r0, r1), (c0, c1) = block_info[None]["array-location"][-2:]
        return _tiles(source, (r0, r1), (c0, c1))

    return da.map_blocks(block, dtype="float32", chunks=chunks, meta=np.empty((0,) * (len(lead) + 2), "float32"))


def mosaic_cube(size: int, shared: Path = SHARED) -> xr.Dataset:
    """A lazy vegediff cube of size x size px tiled from the shared minicubes (see the module docstring)."""
    arrays, dates = load_sources(shared)
    bands = da.stack([_lazy(arrays[b], size) for b in BANDS], axis=1)  # (T, 4, H, W)
    valid = _lazy(arrays[VALID], size) > 0.5
    y = 4_400_000.0 - 10.0 - 20.0 * np.arange(size)
    x = 500_000.0 + 10.0 + 20.0 * np.arange(size)
    cube = new_cube(times=dates, y=y, x=x, crs="EPSG:32629", bands=bands, valid=valid, source="prepare",
                    attrs={"title": f"mosaic of real minicubes ({', '.join(Path(s).name for s in SOURCES)})"})
    for name in STATIC_LAYERS:
        cube[name] = (("y", "x"), _lazy(arrays[name], size), dict(STATIC_ATTRS[name], grid_mapping="spatial_ref"))
    cube.attrs["missing_static_layers"] = ""
    return cube


def write_mosaic(size: int, path: Path, shared: Path = SHARED) -> Path:
    import dask

    with dask.config.set(scheduler="threads", num_workers=2):
        return write_netcdf(mosaic_cube(size, shared), path, complevel=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=5490, help="pixels per side (5490: a full MGRS tile)")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)
    write_mosaic(args.size, args.output)
    print(f"{args.output}: {args.size} x {args.size} px, {FRAMES} frames; forecast it with --weather {WEATHER}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
