"""Does anything a forecast knows predict where its error is large? A per-pixel spread rule needs such
a predictor; without one, the added variance per lead (pipeline/forecast/calibration.py) is the best
a calibration fitted on validation data can do on a site whose error is larger than theirs.

Raw members (16, seed 1 on validation units, --seed on held-out cubes) of one weights file. Each
candidate rule models a pixel's squared error of the ensemble mean at lead t as

    spread^2 + a + b t + c x          (x: one pixel predictor, or none)

fitted by least squares with equal weight per validation unit, and widens each pixel's members to
that variance (as calibration.add_variance does with a per-lead term). Predictors:

    change^2     (ensemble mean - last valid context NDVI)^2: how much the forecast moves
    context-sd^2 the pixel's NDVI variance over the context frames: how dynamic it has been
    spread^2     the raw member variance (with b = c = 0 the factor rule; here on top of a + b t)
    denoisers^2  the variance of the denoisers' own member means (files with several denoisers: member m
                 is drawn by denoiser m mod their count), less what their members' scatter alone gives:
                 what the training seeds disagree on (0 for one denoiser)
    level        the pixel's last valid context NDVI (a term in NDVI, not NDVI^2)

Printed: per unit the RMSE, spread, root mean denoisers^2 and each predictor's correlation with the squared error; then
leave-one-unit-out spread/skill and fair CRPS on the validation units, and the rules fitted on all
of them applied to the held-out cubes.

    python benchmarks/spread_predictors.py                                    # shipped file, test cube (~5 min)
    python benchmarks/spread_predictors.py --run-dir runs/loso-34VCL-2021 \\
        --cube ../shared/data/greenearthnet/MJJ2021_minicube_241_34VCL_59.04_17.96.nc
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.calibration_rules import SHIPPED, Members, validation_members  # noqa: E402
from benchmarks.heldout_skill import PIXEL_RULES  # noqa: E402
from benchmarks.loso_skill import EN21X, JAS  # noqa: E402
from scripts.select_weights import export_last  # noqa: E402
from vegediff_cli.config import CONTEXT_FRAMES  # noqa: E402
from vegediff_cli.cube.predictions import frame_indices  # noqa: E402
from vegediff_cli.cube.readers import open_cube  # noqa: E402
from vegediff_cli.metrics.deterministic import GREENEARTHNET, QualityRule, high_quality  # noqa: E402
from vegediff_cli.metrics.probabilistic import crps_fair  # noqa: E402
from vegediff_cli.model.weights import read_metadata  # noqa: E402
from vegediff_cli.pipeline.evaluate.windows import effective_rule  # noqa: E402
from vegediff_cli.pipeline.forecast.model import model_config  # noqa: E402
from vegediff_cli.pipeline.observed import context_indices, observed_ndvi  # noqa: E402

PREDICTORS = ("change^2", "context-sd^2", "spread^2", "denoisers^2", "level")
RULES = {"added (a + b t)": None, **{f"added + c {p}": p for p in PREDICTORS}}


def between_denoisers(members: np.ndarray, denoisers: int) -> np.ndarray:
    """Variance of the denoisers' own member means about the ensemble mean (member m is drawn by denoiser
    m mod `denoisers`), less the part their members' scatter alone would give: what the training seeds
    disagree on. members (M, ...) -> (...); zeros for one denoiser."""
    if denoisers < 2:
        return np.zeros(members.shape[1:])
    groups = [members[k::denoisers] for k in range(denoisers)]
    means = np.stack([g.mean(axis=0) for g in groups])
    within = np.mean([g.var(axis=0, ddof=1) / g.shape[0] for g in groups], axis=0)
    return np.maximum(0.0, means.var(axis=0, ddof=1) - within)


def pixels(path: Path, forecast, members: np.ndarray, rule: QualityRule, denoisers: int = 1) -> dict[str, np.ndarray]:
    """One row per scored (lead, pixel): members (N, M), observed, lead and the predictors."""
    target = open_cube(path).load()
    rule, landcover, _ = effective_rule(target, rule)
    frames = frame_indices(forecast, target)
    observed = observed_ndvi(target, frames)  # (T, H, W)
    context = observed_ndvi(target, context_indices(int(frames[0]), context_frames=CONTEXT_FRAMES))  # (C, H, W)
    keep = high_quality(observed, context, landcover, rule=rule)
    last = np.full(context.shape[1:], np.nan)
    for frame in context:
        last = np.where(np.isfinite(frame), frame, last)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # pixels without any valid context frame: NaN
        context_var = np.nanvar(context, axis=0)
    members = members.astype("float64")  # (M, T, H, W)
    mean = members.mean(axis=0)
    lead = np.broadcast_to(np.arange(members.shape[1])[:, None, None], mean.shape)
    usable = keep & np.isfinite(observed) & np.isfinite(mean) & np.isfinite(last)[None] & np.isfinite(context_var)[None]
    m = members.shape[0]
    at_last = np.broadcast_to(last, mean.shape)[usable]  # the level predictor is the last valid context NDVI
    return {"members": np.moveaxis(members[:, usable], 0, -1), "observed": observed[usable], "lead": lead[usable],
            "last": at_last, "level": at_last, "change^2": ((mean - last[None]) ** 2)[usable],
            "context-sd^2": np.broadcast_to(context_var, mean.shape)[usable],
            "spread^2": (m + 1) / m * members.var(axis=0, ddof=1)[usable],
            "denoisers^2": between_denoisers(members, denoisers)[usable],
            "low": np.nanmin(members, axis=(0, 2, 3))[lead[usable]], "high": np.nanmax(members, axis=(0, 2, 3))[lead[usable]]}


def joined(parts: list[dict]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def design(rows: dict, predictor: str | None) -> np.ndarray:
    columns = [np.ones_like(rows["observed"]), rows["lead"].astype("float64")]
    return np.stack(columns + ([rows[predictor]] if predictor else []), axis=1)


def fit(units: list[dict], predictor: str | None) -> np.ndarray:
    """Least squares of squared error - spread^2 on the design, each unit weighted equally."""
    x = np.concatenate([design(u, predictor) for u in units])
    gap = np.concatenate([(u["members"].mean(axis=1) - u["observed"]) ** 2 - u["spread^2"] for u in units])
    weight = np.sqrt(np.concatenate([np.full(u["observed"].size, 1 / u["observed"].size) for u in units]))
    coefficients, *_ = np.linalg.lstsq(x * weight[:, None], gap * weight, rcond=None)
    return coefficients


def score(rows: dict, predictor: str | None, coefficients: np.ndarray | None) -> tuple[float, float]:
    """Spread/skill and fair CRPS after widening each row's members to spread^2 + max(0, modelled gap)."""
    members = rows["members"]
    m = members.shape[1]
    mean = members.mean(axis=1, keepdims=True)
    if coefficients is not None:
        variance = members.var(axis=1, ddof=1)
        extra = np.maximum(0.0, design(rows, predictor) @ coefficients) * m / (m + 1)
        scale = np.where(variance > 1e-12, np.sqrt((variance + extra) / np.maximum(variance, 1e-12)), 1.0)
        members = np.clip(mean + scale[:, None] * (members - mean), rows["low"][:, None], rows["high"][:, None])
    mean = members.mean(axis=1)
    spread = (m + 1) / m * members.var(axis=1, ddof=1)
    ratio = np.sqrt(spread.mean()) / np.sqrt(((mean - rows["observed"]) ** 2).mean())
    return float(ratio), float(crps_fair(rows["observed"], members).mean())


def report(validation: dict[str, dict], held_out: dict[str, dict]) -> str:
    lines = ["| unit | pixels x leads | RMSE | spread | between denoisers | "
             + " | ".join(f"corr(error^2, {p})" for p in PREDICTORS) + " |",
             "|---|---|---|---|---|" + "---|" * len(PREDICTORS)]
    for name, rows in {**validation, **held_out}.items():
        error = (rows["members"].mean(axis=1) - rows["observed"]) ** 2
        lines.append(f"| {name} | {error.size} | {np.sqrt(error.mean()):.4f} | {np.sqrt(rows['spread^2'].mean()):.4f} | "
                     f"{np.sqrt(rows['denoisers^2'].mean()):.4f} | "
                     + " | ".join(f"{np.corrcoef(error, rows[p])[0, 1]:+.3f}" for p in PREDICTORS) + " |")
    names = list(validation)
    lines += ["", "| rule (spread/skill / fair CRPS) | " + " | ".join(f"{n} (left out)" for n in names)
              + " | " + " | ".join(f"{n} (held out)" for n in held_out) + " |",
              "|---|" + "---|" * (len(names) + len(held_out))]
    rules = {"raw": (None, None)}
    for label, predictor in RULES.items():
        rules[label] = (predictor, True)
    for label, (predictor, fitted) in rules.items():
        cells = []
        for name in names:
            coefficients = fit([validation[o] for o in names if o != name], predictor) if fitted else None
            cells.append("{:.3f} / {:.4f}".format(*score(validation[name], predictor, coefficients)))
        coefficients = fit(list(validation.values()), predictor) if fitted else None
        cells += ["{:.3f} / {:.4f}".format(*score(rows, predictor, coefficients)) for rows in held_out.values()]
        if fitted and predictor:
            label += f" (c = {coefficients[-1]:+.3f})"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def label(path: Path) -> str:
    """A short name that tells cubes apart: EarthNet2021 samples by tile, year and first pixel row."""
    if path.stem.startswith("context_"):
        parts = path.stem.split("_")
        return f"{parts[1]} {parts[2][:4]} sample {parts[4]}"
    return path.stem[:24]


def draw(weights: Path, run_dir: Path | None, validation_cube: Path, cubes: list[Path],
         seed: int, pixel_rule: str = "greenearthnet") -> tuple[dict[str, dict], dict[str, dict]]:
    """Pixel rows of the validation units (members as scripts/select_weights.py draws them) and of the
    held-out cubes (seed `seed`), from `weights` or, with `run_dir`, that run's last checkpoint of the kind
    and at the guidance `weights` records. `pixel_rule` (heldout_skill.PIXEL_RULES) chooses the pixels of
    the validation cube; the held-out cubes are drawn under GreenEarthNet's rule and, for another
    `pixel_rule`, under it too (rows labelled with it), so a rule fitted on one kind of pixels is seen on both."""
    metadata = read_metadata(weights)
    denoisers = model_config(weights).denoisers
    guidance = float(metadata.get("recommended_guidance", 1.0))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if run_dir is not None:
            weights = export_last(run_dir, folder / "raw.safetensors", kind=metadata.get("selected_weights", "raw"),
                                  extra={})
        source = Members(weights, folder, guidance)
        parts = {}
        for name, path, rule, forecast, members in validation_members(source, validation_cube):
            if name == "cube":
                rule = PIXEL_RULES[pixel_rule]
            parts.setdefault(name.split("_")[0], []).append(pixels(path, forecast, members, rule, denoisers))
        held_out = {}
        for path in cubes:
            drawn = source.raw(path, seed=seed)
            held_out[label(path)] = pixels(path, *drawn, GREENEARTHNET, denoisers)
            if pixel_rule != "greenearthnet":
                held_out[f"{label(path)} {pixel_rule}"] = pixels(path, *drawn, PIXEL_RULES[pixel_rule], denoisers)
    return {name: joined(unit) for name, unit in parts.items()}, held_out


def run(description: str, report: Callable[[dict[str, dict], dict[str, dict]], str]) -> int:
    """A benchmark over drawn pixel rows: parse its command line, draw the rows, print `report` of them."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=SHIPPED, help="weights file (its guidance and kind)")
    parser.add_argument("--run-dir", type=Path, default=None, help="training run: its last checkpoint instead")
    parser.add_argument("--validation", type=Path, default=EN21X, help="validation cube (29SND-2017 fold: JAS)")
    parser.add_argument("--cube", type=Path, action="append", default=[], help="held-out cube(s); default the test cube")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pixels", choices=tuple(PIXEL_RULES), default="greenearthnet",
                        help="pixels of the validation cube (the series' seasons score every valid pixel); held-out "
                             "cubes are scored under GreenEarthNet's rule and this one")
    args = parser.parse_args()
    print(report(*draw(args.weights, args.run_dir, args.validation, args.cube or [JAS], args.seed, args.pixels)))
    return 0


if __name__ == "__main__":
    sys.exit(run(__doc__, report))
