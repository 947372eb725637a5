"""Do members drawn under the 8 rotations / reflections of the input widen or improve the ensemble?

Training augments every window with the 8 dihedral transforms (training/windows.py). Test-time
augmentation would draw each member from a transformed copy of the cube (context, static layers)
and transform it back, so members differ by orientation as well as by noise. This benchmark
compares, on one cube, 24 raw members of one forecast against 8 forecasts of 3 members each, one
per transform (3 members keep the three denoisers of the shipped file equally used), both then
widened by the weights' spread calibration as `vegediff forecast` would widen them.

    python benchmarks/dihedral_members.py            # shipped file, validation cube (~1 min)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.calibration_rules import SHIPPED  # noqa: E402
from benchmarks.heldout_skill import forecast_cube, skill_rows  # noqa: E402
from benchmarks.loso_skill import EN21X  # noqa: E402
from vegediff_cli.cube.predictions import MEMBER, PRED  # noqa: E402
from vegediff_cli.model.weights import read_metadata  # noqa: E402
from vegediff_cli.pipeline.forecast.calibration import ADDED_KEY, add_variance  # noqa: E402
from vegediff_cli.training.windows import dihedral  # noqa: E402

SPATIAL = (("lat", "lon"), ("y", "x"))


def undo(array: np.ndarray, k: int) -> np.ndarray:
    """The inverse of training.windows.dihedral(., k) on the last two axes."""
    if k >= 4:
        array = np.flip(array, axis=-1)
    return np.ascontiguousarray(np.rot90(array, -(k % 4), axes=(-2, -1)))


def transformed(cube: Path, k: int, folder: Path) -> Path:
    """The cube with every spatial variable under transform k (coordinates unchanged: square cubes)."""
    ds = xr.open_dataset(cube).load()
    for name, variable in ds.data_vars.items():
        if variable.dims[-2:] in SPATIAL:
            ds[name] = (variable.dims, dihedral(variable.values, k), variable.attrs)
    path = folder / f"k{k}_{cube.name}"
    ds.to_netcdf(path)
    return path


def members(cube: Path, weights: Path, folder: Path, *, transforms: bool, count: int, guidance: float):
    """(first forecast dataset, raw members (M, T, H, W) in the cube's orientation)."""
    ks = range(8) if transforms else range(1)  # transform k, drawn with sampling seed k
    first, drawn = None, []
    for k in ks:
        source = transformed(cube, k, folder) if transforms else cube
        path = forecast_cube(source, folder / f"out{k}", weights=weights, members=count // len(ks), steps=10,
                             seed=k, guidance=guidance, calibrate_spread=False)
        forecast = xr.open_dataset(path).load()
        first = forecast if first is None else first
        drawn.append(undo(forecast[MEMBER].values, k))
    return first, np.concatenate(drawn)


def scored(cube: Path, first: xr.Dataset, values: np.ndarray, path: Path) -> dict:
    dims = first[MEMBER].dims
    ds = first.drop_vars([MEMBER, *[d for d in dims[:1] if d in first.coords]])
    ds[MEMBER] = (dims, values.astype("float32"), first[MEMBER].attrs)
    ds[PRED] = (first[PRED].dims, values.mean(axis=0).astype("float32"), first[PRED].attrs)
    ds.attrs["members"] = values.shape[0]
    ds.to_netcdf(path)
    rows, details = skill_rows(cube, path)
    row = next(r for r in rows if r["forecast"] == "vegediff")
    return {**row, **{k: details["probabilistic"].get(k) for k in ("crps", "mae_ensemble_mean", "spread_skill_ratio")}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=SHIPPED)
    parser.add_argument("--cube", type=Path, default=EN21X, help="a square NetCDF cube (default: the validation cube)")
    parser.add_argument("--members", type=int, default=24, help="a multiple of 8")
    args = parser.parse_args()
    metadata = read_metadata(args.weights)
    added = np.asarray(json.loads(metadata[ADDED_KEY]), dtype="float32")
    print("| members | calibration | RMSE | NSE | direction | fair CRPS | MAE of mean | spread/skill |")
    print("|---|---|---|---|---|---|---|---|")
    for transforms in (False, True):
        with tempfile.TemporaryDirectory() as tmp:
            first, raw = members(args.cube, args.weights, Path(tmp), transforms=transforms, count=args.members,
                                 guidance=float(metadata.get("recommended_guidance", 1.0)))
            for label, values in (("raw", raw), ("added variance", add_variance(raw, added[: raw.shape[1]]))):
                r = scored(args.cube, first, values, Path(tmp) / f"pooled-{label.replace(' ', '-')}.nc")
                print(f"| {'8 transforms x ' + str(args.members // 8) if transforms else 'one forecast of ' + str(args.members)}"
                      f" | {label} | {r['rmse']:.4f} | {r['nse']:.3f} | {r['direction']:.3f} | {r['crps']:.4f} | "
                      f"{r['mae_ensemble_mean']:.4f} | {r['spread_skill_ratio']:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
