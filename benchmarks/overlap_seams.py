"""What the chip overlap costs and buys: chips per tile, seams, and the members' spread in overlaps.

Forecasts a mosaic of real chips (benchmarks/mosaic.py) with the installed CLI at two overlaps and
prints, per overlap:
- chips for the mosaic and for a full 5490 x 5490 px tile, and the command's wall time;
- seams: the mean |dNDVI/dx| of the ensemble mean divided by that of the last clear context
  frame, at the columns where a chip starts or ends vs all other columns (the mosaic's own
  128 px source-tile borders left out). A seam would make the first figure larger;
- spread: the members' NDVI standard deviation in pixels covered by one chip vs by several.
  A plain weighted average of two chips' independent members would lower their spread there
  (0.85 x at 16 px) while the spread calibration (pipeline/forecast/calibration.py) was fitted on
  single chips; the blend (pipeline/forecast/blocks.Accumulator) keeps it, so the ratio should be 1.

    python benchmarks/overlap_seams.py --size 1024 --members 4 --overlaps 32 16
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mosaic import TILE, WEATHER, write_mosaic  # noqa: E402

from vegediff_cli.config import CHIP_SIZE  # noqa: E402
from vegediff_cli.geo import chip_layout  # noqa: E402

FULL_TILE_PX = 5490


def forecast(mosaic: Path, output: Path, *, overlap: int, members: int) -> float:
    began = time.perf_counter()
    subprocess.run(["vegediff", "forecast", "--input", str(mosaic), "--weather", str(WEATHER), "--output", str(output),
                    "--members", str(members), "--overlap", str(overlap), "--no-cogs", "--quiet"], check=True)
    return time.perf_counter() - began


def coverage(size: int, overlap: int) -> np.ndarray:
    """(size, size) number of chips covering each pixel."""
    count = np.zeros((size, size), int)
    for chip in chip_layout(size, size, overlap=overlap):
        count[chip.row:chip.row + CHIP_SIZE, chip.col:chip.col + CHIP_SIZE] += 1
    return count


def seam_ratios(ds: xr.Dataset, size: int, overlap: int) -> tuple[float, float]:
    """Mean |dNDVI/dx| of the forecast over the context's, at chip start/end columns and at the other columns."""
    forecast_grad = np.nanmean(np.abs(np.diff(ds["ndvi_pred"].values, axis=-1)), axis=(0, 1))  # (size - 1,)
    context_grad = np.nanmean(np.abs(np.diff(ds["ndvi_last_clear"].values, axis=-1)), axis=0)
    chips = chip_layout(size, size, overlap=overlap)
    edge = np.zeros(size - 1, bool)
    for chip in chips:
        for col in (chip.col - 1, chip.col + CHIP_SIZE - 1):
            if 0 <= col < size - 1:
                edge[col] = True
    mosaic_border = np.zeros(size - 1, bool)
    mosaic_border[TILE - 1::TILE] = True
    ratio = forecast_grad / context_grad
    return float(np.mean(ratio[edge & ~mosaic_border])), float(np.mean(ratio[~edge & ~mosaic_border]))


def spread(ds: xr.Dataset, size: int, overlap: int) -> tuple[float, float, float]:
    """Mean member NDVI std in single-chip pixels, in overlap pixels, and the share of overlap pixels."""
    members = ds["ndvi_member"]
    std = members.std("member", ddof=1).mean("time").values
    covered = coverage(size, overlap)
    ok = np.isfinite(std)
    single, multi = ok & (covered == 1), ok & (covered > 1)
    return float(std[single].mean()), float(std[multi].mean()), float(multi.sum() / ok.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="mosaic side in px")
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--overlaps", type=int, nargs="+", default=[32, 16])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        mosaic = folder / "mosaic.nc"
        write_mosaic(args.size, mosaic)
        print(f"{args.size}^2 mosaic of real chips, {args.members} members, `vegediff forecast --overlap N`")
        for overlap in args.overlaps:
            wall = forecast(mosaic, folder / f"overlap{overlap}.nc", overlap=overlap, members=args.members)
            with xr.open_dataset(folder / f"overlap{overlap}.nc") as ds:
                at_edges, elsewhere = seam_ratios(ds, args.size, overlap)
                single, multi, share = spread(ds, args.size, overlap)
            print(f"overlap {overlap} px: {len(chip_layout(args.size, args.size, overlap=overlap))} chips "
                  f"({len(chip_layout(FULL_TILE_PX, FULL_TILE_PX, overlap=overlap))} for a full tile), {wall:.0f} s wall\n"
                  f"  seams: |dNDVI/dx| forecast / context {at_edges:.3f} at chip start/end columns, "
                  f"{elsewhere:.3f} elsewhere\n"
                  f"  spread: member NDVI std {single:.4f} in single-chip pixels, {multi:.4f} in overlaps "
                  f"({multi / single:.3f} x), overlaps are {share:.0%} of the pixels")


if __name__ == "__main__":
    main()
