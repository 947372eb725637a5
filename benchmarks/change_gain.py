"""Is the ensemble mean's change too timid, or too bold? A gain on the forecast change, fitted on
validation data, tried and (so far) not adopted.

The ensemble mean m of a pixel moves away from its last valid context NDVI p; a post-processed
forecast p + g (m - p) with one gain g per weights file, least squares on the validation units (equal
weight per unit), would correct a systematic under- or over-statement of change. It keeps the sign of
every change, so the direction-of-change score does not move. Printed, with pooled RMSE over every
scored (lead, pixel) of a cube (not GreenEarthNet's per-pixel RMSE): per validation unit its own best
gain and the gain fitted on the other units; per held-out cube the RMSE of persistence, of the mean and
of the mean with the gain fitted on all validation units (members as spread_predictors.py draws them).

    python benchmarks/change_gain.py                                  # shipped file, test cube (~5 min)
    python benchmarks/change_gain.py --run-dir runs/loso-34VCL-2021 \\
        --cube ../shared/data/greenearthnet/MJJ2021_minicube_241_34VCL_59.04_17.96.nc
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.spread_predictors import run  # noqa: E402


def gain(units: list[dict]) -> float:
    """Least-squares gain on the change from persistence, each unit weighted equally; at least 0."""
    moved = [u["members"].mean(axis=1) - u["last"] for u in units]
    happened = [u["observed"] - u["last"] for u in units]
    numerator = sum(float((h * m).mean()) for h, m in zip(happened, moved, strict=True))
    denominator = sum(float((m * m).mean()) for m in moved)
    return max(0.0, numerator / denominator) if denominator > 0 else 1.0


def rmse(rows: dict, g: float) -> float:
    """Pooled RMSE of p + g (m - p): g = 0 is persistence, g = 1 the ensemble mean."""
    forecast = rows["last"] + g * (rows["members"].mean(axis=1) - rows["last"])
    return float(np.sqrt(((forecast - rows["observed"]) ** 2).mean()))


def report(validation: dict[str, dict], held_out: dict[str, dict]) -> str:
    lines = ["| validation unit | pixels x leads | persistence | mean | own best gain | gain of the others | mean x gain |",
             "|---|---|---|---|---|---|---|"]
    for name, rows in validation.items():
        others = gain([u for o, u in validation.items() if o != name])
        lines.append(f"| {name} | {rows['observed'].size} | {rmse(rows, 0):.4f} | {rmse(rows, 1):.4f} | "
                     f"{gain([rows]):.2f} | {others:.2f} | {rmse(rows, others):.4f} |")
    fitted = gain(list(validation.values()))
    lines += ["", f"gain fitted on all validation units: {fitted:.2f}", "",
              "| held-out cube | pixels x leads | persistence | mean | own best gain (not usable) | mean x gain |",
              "|---|---|---|---|---|---|"]
    for name, rows in held_out.items():
        lines.append(f"| {name} | {rows['observed'].size} | {rmse(rows, 0):.4f} | {rmse(rows, 1):.4f} | "
                     f"{gain([rows]):.2f} | {rmse(rows, fitted):.4f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(run(__doc__, report))
