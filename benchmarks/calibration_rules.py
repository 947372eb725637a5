"""Which spread calibration transfers to data it was not fitted on: the earlier releases' factor per
lead against the added variance per lead (pipeline/forecast/calibration.py), spread/skill (1 is
calibrated) and fair CRPS.

Without options: leave-one-unit-out on the validation units, from the per-unit RMSE and raw spread
per lead that the weights file records (`spread_calibration`, 16 members): each rule fitted on two
units, applied to the third. No forecast is run.

With --run-dir: both rules fitted on a training run's validation units (raw members of its last
checkpoint, as scripts/select_weights.py fits them; the factor rule with its common factor) and
applied to the same raw members of held-out cubes (--cube, repeatable). With --shipped-held-out: the
shipped file's two calibrations (the added variance and, in `spread_calibration`, the factors it
replaced) on the test cube.

    python benchmarks/calibration_rules.py                                   # seconds
    python benchmarks/calibration_rules.py --shipped-held-out                # ~1 min
    python benchmarks/calibration_rules.py --run-dir runs/loso-29SQC-2017 \\
        --cube ../shared/data/earthnet2021/context/context_29SQC_2017-07-02_2017-11-28_697_825_4025_4153_10_90_62_142.npz
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.heldout_skill import forecast_cube  # noqa: E402
from benchmarks.loso_skill import EN21X, JAS  # noqa: E402
from scripts.select_weights import export_last, season_validation_cubes  # noqa: E402
from scripts.train_weights import ROOT  # noqa: E402
from vegediff_cli.config import CONTEXT_FRAMES  # noqa: E402
from vegediff_cli.cube.predictions import MEMBER, frame_indices, read_forecast  # noqa: E402
from vegediff_cli.cube.readers import open_cube  # noqa: E402
from vegediff_cli.metrics.deterministic import ALL_VALID, GREENEARTHNET, QualityRule, high_quality  # noqa: E402
from vegediff_cli.metrics.probabilistic import crps_fair  # noqa: E402
from vegediff_cli.model.weights import read_metadata  # noqa: E402
from vegediff_cli.pipeline.evaluate.windows import effective_rule  # noqa: E402
from vegediff_cli.pipeline.forecast.calibration import add_variance, fit_added_variance, inflate  # noqa: E402
from vegediff_cli.pipeline.observed import context_indices, observed_ndvi  # noqa: E402

SHIPPED = ROOT / "weights" / "vegediff-small.safetensors"
RULES = ("raw", "factor", "added")


def fit_factors(rmse: dict[str, np.ndarray], spread: dict[str, np.ndarray], count: dict[str, np.ndarray] | None = None,
                *, combine=np.nanmax) -> np.ndarray:
    """The earlier releases' rule: per unit RMSE / spread per lead, a straight line over the leads
    (weighted by sqrt(count) where counts are known), never below 1; per lead `combine` over units."""
    curves = []
    for name in rmse:
        ratio = rmse[name] / spread[name]
        weight = np.sqrt(count[name]) if count else np.ones_like(ratio)
        usable = np.isfinite(ratio) & (weight > 0)
        lead = np.arange(ratio.size, dtype="float64")
        slope, intercept = np.polyfit(lead[usable], ratio[usable], 1, w=weight[usable])
        curves.append(np.maximum(1.0, intercept + slope * lead))
    return combine(np.stack(curves), axis=0)


def ratio_from_figures(rmse: np.ndarray, spread_sq: np.ndarray) -> float:
    usable = np.isfinite(rmse) & np.isfinite(spread_sq)
    return float(np.sqrt(spread_sq[usable].mean()) / np.sqrt((rmse[usable] ** 2).mean()))


def transfer_table(metadata: dict[str, str]) -> str:
    units = json.loads(metadata["spread_calibration"])["units"]
    rmse = {k: np.asarray(v["rmse_per_lead"], "float64") for k, v in units.items()}
    spread = {k: np.asarray(v["spread_per_lead"], "float64") for k, v in units.items()}
    rows = {"raw members": {k: ratio_from_figures(rmse[k], spread[k] ** 2) for k in units}}
    for label, combine in (("factor per lead, largest of the other units", np.nanmax),
                           ("factor per lead, mean of the other units", np.nanmean)):
        rows[label] = {}
        for k in units:
            others = [o for o in units if o != k]
            f = fit_factors({o: rmse[o] for o in others}, {o: spread[o] for o in others}, combine=combine)
            rows[label][k] = ratio_from_figures(rmse[k], (spread[k] * f) ** 2)
    rows["added variance, mean of the other units"] = {}
    for k in units:
        others = [o for o in units if o != k]
        added = fit_added_variance({o: rmse[o] for o in others}, {o: spread[o] for o in others})
        rows["added variance, mean of the other units"][k] = ratio_from_figures(rmse[k], spread[k] ** 2 + added)
    lines = ["| rule | " + " | ".join(units) + " |", "|---|" + "---|" * len(units)]
    lines += [f"| {label} | " + " | ".join(f"{values[k]:.3f}" for k in units) + " |" for label, values in rows.items()]
    return "\n".join(lines)


def pixel_sums(path: Path, forecast, members: np.ndarray, rule: QualityRule) -> dict[str, np.ndarray | float]:
    """Per lead squared error of the mean, spread^2 ((M+1)/M var) and count; fair CRPS and absolute error
    sums, on the rule's pixels (scoring.spread_and_error's pixels)."""
    target = open_cube(path).load()
    rule, landcover, _ = effective_rule(target, rule)
    frames = frame_indices(forecast, target)
    observed = observed_ndvi(target, frames)
    keep = high_quality(observed, observed_ndvi(target, context_indices(int(frames[0]), context_frames=CONTEXT_FRAMES)),
                        landcover, rule=rule)
    members = members.astype("float64")
    m = members.shape[0]
    mean = members.mean(axis=0)
    usable = keep[None] & np.isfinite(observed) & np.isfinite(mean)
    return {"sq": np.where(usable, (mean - observed) ** 2, 0.0).sum(axis=(1, 2)),
            "sp": (m + 1) / m * np.where(usable, members.var(axis=0, ddof=1), 0.0).sum(axis=(1, 2)),
            "n": usable.sum(axis=(1, 2)),
            "crps": float(crps_fair(observed[usable], np.moveaxis(members[:, usable], 0, -1)).sum()),
            "ae": float(np.abs(mean - observed)[usable].sum())}


def pooled(parts: list[dict]) -> dict:
    return {k: sum(p[k] for p in parts) for k in parts[0]}


def per_lead(sums: dict) -> tuple[np.ndarray, np.ndarray]:
    """RMSE of the mean and spread per lead from pixel_sums (one cube's, or pooled)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(sums["sq"] / sums["n"]), np.sqrt(sums["sp"] / sums["n"])


def summary(sums: dict) -> dict[str, float]:
    n = sums["n"].sum()
    return {"spread_skill": float(np.sqrt(sums["sp"].sum() / n) / np.sqrt(sums["sq"].sum() / n)),
            "crps": sums["crps"] / n, "mae": sums["ae"] / n, "pixels": int(n)}


class Members:
    """Raw members of one weights file on cubes (seed as given), and the two calibrations applied to them."""

    def __init__(self, weights: Path, folder: Path, guidance: float) -> None:
        self.weights, self.folder, self.guidance = weights, folder, guidance

    def raw(self, path: Path, *, seed: int, guidance: float | None = None):
        out = forecast_cube(path, self.folder, weights=self.weights, members=16, steps=10, seed=seed,
                            guidance=self.guidance if guidance is None else guidance, calibrate_spread=False)
        forecast = read_forecast(out).load()
        return forecast, np.asarray(forecast[MEMBER].values, dtype="float32")


def calibrated(rule: str, values: np.ndarray, members: np.ndarray) -> np.ndarray:
    if rule == "raw":
        return members
    return inflate(members, values) if rule == "factor" else add_variance(members, values)


def validation_members(source: Members, validation: Path) -> Iterator[tuple[str, Path, QualityRule, object, np.ndarray]]:
    """(unit, cube file, quality rule, forecast, raw members) for each cube of the validation units, the
    members drawn as scripts/select_weights.py draws them (seed 1; the series' seasons at guidance 1):
    unit "cube" is the validation cube, the others the held-out seasons of each long series."""
    forecast, members = source.raw(validation, seed=1)
    yield "cube", validation, GREENEARTHNET, forecast, members
    for stem, paths in season_validation_cubes(source.folder).items():
        for path in paths:
            yield (stem, path, ALL_VALID, *source.raw(path, seed=1, guidance=1.0))


def fit_on_validation(source: Members, validation: Path) -> dict[str, np.ndarray]:
    """Both rules fitted on the validation units' raw members (seed 1), as scripts/select_weights.py does;
    the factor rule ends with the common factor that brings the validation cube to 1."""
    parts, cube = {}, None
    for name, path, rule, forecast, members in validation_members(source, validation):
        parts.setdefault(name, []).append(pixel_sums(path, forecast, members, rule))
        cube = cube or (path, forecast, members)
    sums = {name: pooled(unit) for name, unit in parts.items()}
    rmse, spread = {}, {}
    for name, unit in sums.items():
        rmse[name], spread[name] = per_lead(unit)
    factors = fit_factors(rmse, spread, {k: s["n"] for k, s in sums.items()})
    ratio = summary(pixel_sums(cube[0], cube[1], inflate(cube[2], factors.astype("float32")), GREENEARTHNET))["spread_skill"]
    if abs(ratio - 1) > 0.02:
        factors = np.maximum(1.0, factors / ratio)
    return {"factor": factors, "added": fit_added_variance(rmse, spread)}


def held_out_table(source: Members, fitted: dict[str, np.ndarray], cubes: list[Path], *, seed: int) -> str:
    lines = ["| held-out cube | pixels | spread/skill raw / factor / added | fair CRPS raw / factor / added | MAE of mean |",
             "|---|---|---|---|---|"]
    for path in cubes:
        forecast, members = source.raw(path, seed=seed)
        scores = {rule: summary(pixel_sums(path, forecast, calibrated(rule, fitted.get(rule, np.zeros(0)).astype("float32"),
                                                                      members), GREENEARTHNET)) for rule in RULES}
        lines.append(f"| {path.name[:60]} | {scores['raw']['pixels']} | "
                     + " / ".join(f"{scores[r]['spread_skill']:.3f}" for r in RULES) + " | "
                     + " / ".join(f"{scores[r]['crps']:.4f}" for r in RULES) + f" | {scores['added']['mae']:.4f} |")
        print(lines[-1], file=sys.stderr, flush=True)
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=SHIPPED, help="file whose spread_calibration figures are read")
    parser.add_argument("--shipped-held-out", action="store_true", help="the file's two calibrations on the test cube")
    parser.add_argument("--run-dir", type=Path, default=None, help="training run: fit both rules on its validation units")
    parser.add_argument("--validation", type=Path, default=EN21X, help="validation cube of --run-dir (29SND-2017 fold: JAS)")
    parser.add_argument("--cube", type=Path, action="append", default=[], help="held-out cube(s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    metadata = read_metadata(args.weights)
    if args.run_dir is None and not args.shipped_held_out:
        print(transfer_table(metadata))
        return 0
    guidance = float(metadata.get("recommended_guidance", 1.0))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.run_dir is not None:
            weights = export_last(args.run_dir, folder / "raw.safetensors", kind=metadata.get("selected_weights", "raw"),
                                  extra={})
            source = Members(weights, folder, guidance)
            fitted = fit_on_validation(source, args.validation)
        else:
            source = Members(args.weights, folder, guidance)
            fitted = {"added": np.asarray(json.loads(metadata["spread_added_variance"]), "float64"),
                      "factor": np.asarray(json.loads(metadata["spread_calibration"])["previous_spread_inflation"], "float64")}
        print(f"factors: {' '.join(f'{f:.2f}' for f in fitted['factor'])}\n"
              f"added spread (NDVI): {' '.join(f'{a:.3f}' for a in np.sqrt(fitted['added']))}", file=sys.stderr)
        print(held_out_table(source, fitted, args.cube or [JAS], seed=args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
