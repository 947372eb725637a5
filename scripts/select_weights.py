"""Pick a training run's checkpoint and guidance scale and calibrate its spread, on validation data only.

Validation (never seen by the denoiser): the EarthNet2021x cube (GreenEarthNet's scoring) and the
held-out last season of each long series (training/validation.py: 30-frame windows starting
every month, unconditional, every valid pixel scored). Every checkpoint that
`scripts/train_weights.py --keep-every N` kept (its EMA and its raw weights) is forecast on all of
them (the cube at each guidance scale); the candidate with the best mean skill over persistence,
1 - RMSE / RMSE(persistence), averaged over the cube and the two series, wins. Its members are
then forecast again (--calibration-members, raw spread) on every validation unit to fit the
variance added to the members' spread per lead (pipeline/forecast/calibration.py: the units' mean
of max(0, RMSE^2 - spread^2), a straight line over the leads). The winner is written with the choice
recorded in its metadata (`recommended_guidance`, `selected_step`, `selected_weights`,
`spread_added_variance`, `spread_calibration` (the per-unit figures), `validation_*`, `validation_table`).

    python scripts/select_weights.py --run-dir runs/shipped --output weights/vegediff-small.safetensors
    python scripts/select_weights.py --run-dir runs/no-dates --last 1 --guidance 1   # quick ablation score
    python scripts/select_weights.py --run-dir runs/s1500-no-32UQC --step 1500 --score-only  # ablation: table only
    python scripts/select_weights.py --run-dir runs/X --step 500 --score-only --base weights/vegediff-small.safetensors

The test cube is never read.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.heldout_skill import forecast_cube, skill_rows  # noqa: E402
from scripts.train_weights import SHARED, VALIDATION  # noqa: E402
from vegediff_cli.config import CONTEXT_FRAMES  # noqa: E402
from vegediff_cli.cube.netcdf import write_netcdf  # noqa: E402
from vegediff_cli.cube.predictions import read_forecast  # noqa: E402
from vegediff_cli.cube.readers import open_cube  # noqa: E402
from vegediff_cli.metrics.deterministic import ALL_VALID, GREENEARTHNET  # noqa: E402
from vegediff_cli.model.weights import load_weights, save_weights  # noqa: E402
from vegediff_cli.pipeline.evaluate.scoring import EvaluationSettings, spread_and_error  # noqa: E402
from vegediff_cli.pipeline.evaluate.scoring import score as score_forecast  # noqa: E402
from vegediff_cli.pipeline.forecast.calibration import ADDED_KEY, SCALE_KEY, fit_added_variance  # noqa: E402
from vegediff_cli.training.checkpoint import load_checkpoint  # noqa: E402
from vegediff_cli.training.validation import HELD_OUT_SEASONS, season_cubes  # noqa: E402

KINDS = {"ema": "ema", "raw": "vegenet"}  # weights kind -> key in the training checkpoint


def export(base: Path, checkpoint: Path, output: Path, *, kind: str, extra: dict[str, str]) -> Path:
    """VAE, config and metadata of `base` + the `kind` denoiser weights of `checkpoint` -> weights file."""
    model, metadata = load_weights(base)
    for key in (ADDED_KEY, SCALE_KEY):  # a calibration belongs to the weights it was fitted for, not to these
        metadata.pop(key, None)
    state = load_checkpoint(checkpoint)
    model.vegenet.load_state_dict(state[KINDS[kind]])
    return save_weights(model, output, metadata={**metadata, **extra, "selected_step": str(state["step"]),
                                                 "selected_weights": kind})


def export_last(run_dir: Path, output: Path, *, kind: str, extra: dict[str, str]) -> Path:
    """`export` of a training run's last kept diffusion checkpoint over the run's final weights file."""
    last = sorted((run_dir / "diffusion").glob("diffusion-step*.ckpt"))[-1]
    return export(run_dir / "final.safetensors", last, output, kind=kind, extra=extra)


def score(cube: Path, weights: Path, folder: Path, *, members: int, guidance: float, seed: int = 0,
          calibrated: bool = False) -> dict:
    forecast = forecast_cube(cube, folder, weights=weights, members=members, steps=10, seed=seed, guidance=guidance,
                             calibrate_spread=calibrated)
    rows, details = skill_rows(cube, forecast)
    model = next(r for r in rows if r["forecast"] == "vegediff")
    persistence = next(r for r in rows if r["forecast"] == "persistence")
    return {"rmse": model["rmse"], "nse": model["nse"], "direction": model.get("direction"),
            "persistence_rmse": persistence["rmse"], "probabilistic": details["probabilistic"], "forecast": forecast}


def season_validation_cubes(folder: Path) -> dict[str, list[Path]]:
    """The held-out seasons as cube files in `folder`, per series."""
    out = {}
    for stem, cutoff in HELD_OUT_SEASONS.items():
        out[stem] = [write_netcdf(cube, folder / f"{name}.nc") for name, cube in
                     season_cubes(SHARED / "sentinel2_series" / f"{stem}.nc", cutoff)]
    return out


def score_seasons(cubes: dict[str, list[Path]], weights: Path, folder: Path, *, members: int) -> dict[str, dict]:
    """Per series: mean RMSE of the ensemble mean and of persistence over its windows, skill, pooled direction."""
    results = {}
    for stem, paths in cubes.items():
        model, persistence, direction, scored = [], [], 0.0, 0
        for path in paths:
            forecast = forecast_cube(path, folder, weights=weights, members=members, steps=10, seed=0, guidance=1.0,
                                     calibrate_spread=False)
            scores = score_forecast(open_cube(path).load(), read_forecast(forecast).load(), baseline="persistence",
                                    cube=path.stem, name="vegediff", settings=EvaluationSettings(quality=ALL_VALID))
            headline = scores.headline
            if not headline:
                continue
            model.append(headline["rmse"])
            persistence.append(scores.baseline.headline["rmse"])
            direction += headline.get("direction", 0.0) * headline.get("direction_pixels", 0)
            scored += headline.get("direction_pixels", 0)
        rmse, base = sum(model) / len(model), sum(persistence) / len(persistence)
        results[stem] = {"windows": len(model), "rmse": round(rmse, 4), "persistence_rmse": round(base, 4),
                         "skill": round(1 - rmse / base, 4), "direction": round(direction / max(scored, 1), 4)}
    return results


def validation_skill(cube_skill: float, series: dict[str, dict]) -> float:
    """Mean skill over persistence of the validation cube and each long series (the selection's criterion)."""
    return round((cube_skill + sum(v["skill"] for v in series.values())) / (1 + len(series)), 4)


def validation_cube() -> Path:
    """The default validation cube: the EarthNet2021x one."""
    return next((SHARED / "earthnet2021x").glob(f"{VALIDATION}*.nc"))


def calibrate(cube: Path, seasons: dict[str, list[Path]], weights: Path, folder: Path, *, members: int,
              guidance: float) -> tuple[list[float], dict]:
    """Added variance per lead from raw-spread forecasts of every validation unit (the cube, each
    series' windows pooled): per lead the units' mean of max(0, RMSE^2 - spread^2), a straight line
    over the leads (calibration.fit_added_variance); and the per-unit figures it came from."""
    units = {"cube": [(cube, GREENEARTHNET, guidance)],
             **{stem: [(p, ALL_VALID, 1.0) for p in paths] for stem, paths in seasons.items()}}
    per_unit = {}
    for name, members_of_unit in units.items():
        sq_error = spread_sq = count = 0.0
        for path, rule, scale in members_of_unit:
            forecast = forecast_cube(path, folder, weights=weights, members=members, steps=10, seed=1, guidance=scale,
                                     calibrate_spread=False)
            rmse, spread, n = spread_and_error(open_cube(path).load(), read_forecast(forecast).load(),
                                               context_frames=CONTEXT_FRAMES, rule=rule)
            sq_error = sq_error + np.nan_to_num(rmse**2) * n
            spread_sq = spread_sq + np.nan_to_num(spread**2) * n
            count = count + n
        with np.errstate(invalid="ignore", divide="ignore"):
            rmse, spread = np.sqrt(sq_error / count), np.sqrt(spread_sq / count)
        per_unit[name] = {"rmse_per_lead": [round(float(v), 4) for v in rmse],
                          "spread_per_lead": [round(float(v), 4) for v in spread]}
    return [round(float(a), 6) for a in fit_units(per_unit)], per_unit


def fit_units(per_unit: dict[str, dict]) -> np.ndarray:
    """calibration.fit_added_variance of per-unit figures as `calibrate` records them (name ->
    {"rmse_per_lead": [...], "spread_per_lead": [...]})."""
    return fit_added_variance({k: np.asarray(v["rmse_per_lead"], "float64") for k, v in per_unit.items()},
                              {k: np.asarray(v["spread_per_lead"], "float64") for k, v in per_unit.items()})


def calibration_metadata(added: list[float], per_lead: dict, *, members: int) -> dict[str, str]:
    """Metadata of a spread calibration that scripts/select_weights.calibrate fitted."""
    return {ADDED_KEY: json.dumps(added),
            "spread_calibration": json.dumps({"members": members, "method": "added variance", "units": per_lead})}


def validation_metadata(scores: dict) -> dict[str, str]:
    """The `validation_*` metadata of `validation`'s scores."""
    return {"validation_rmse": f"{scores['rmse']:.4f}", "validation_nse": f"{scores['nse']:.4f}",
            "validation_persistence_rmse": f"{scores['persistence_rmse']:.4f}",
            "validation_skill": f"{scores['skill']:.4f}", "validation_seasons": json.dumps(scores["seasons"])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, required=True, help="runs/NAME of scripts/train_weights.py")
    parser.add_argument("--validation", type=Path, default=None, help="validation cube (default: the EarthNet2021x one)")
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0, 2.0])
    parser.add_argument("--members", type=int, default=8, help="members per candidate forecast")
    parser.add_argument("--calibration-members", type=int, default=16)
    parser.add_argument("--kinds", nargs="+", choices=list(KINDS), default=list(KINDS))
    parser.add_argument("--last", type=int, default=0, help="score only the last N kept checkpoints (0: all)")
    parser.add_argument("--step", type=int, default=None, help="score only the checkpoint kept at this step")
    parser.add_argument("--output", type=Path, default=None, help="default: RUN_DIR/selected.safetensors")
    parser.add_argument("--base", type=Path, default=None,
                        help="weights file whose VAE, configuration and metadata the candidates take (default: "
                             "RUN_DIR/final.safetensors; a file of the same recipe scores a run that has not finished)")
    parser.add_argument("--score-only", action="store_true",
                        help="score the candidates and write RUN_DIR/validation_table.json (-stepN.json with --step); "
                             "no calibration, no weights file")
    args = parser.parse_args()
    cube = args.validation or validation_cube()
    base = args.base or args.run_dir / "final.safetensors"
    output = args.output or args.run_dir / "selected.safetensors"
    kept = sorted((args.run_dir / "diffusion").glob("diffusion-step*.ckpt"))
    if args.step is not None:
        kept = [c for c in kept if c.name == f"diffusion-step{args.step:06d}.ckpt"]
    if args.last:
        kept = kept[-args.last:]
    if not kept:
        print(f"no kept checkpoints in {args.run_dir / 'diffusion'}", file=sys.stderr)
        return 2
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        seasons = season_validation_cubes(folder)
        for checkpoint, kind in ((c, k) for c in kept for k in args.kinds):
            weights = export(base, checkpoint, folder / f"{checkpoint.stem}-{kind}.safetensors", kind=kind, extra={})
            series = score_seasons(seasons, weights, folder, members=args.members)
            for guidance in args.guidance:
                scored = score(cube, weights, folder, members=args.members, guidance=guidance)
                cube_skill = 1 - scored["rmse"] / scored["persistence_rmse"]
                skill = validation_skill(cube_skill, series)
                results.append({"checkpoint": checkpoint.name, "kind": kind, "guidance": guidance,
                                "skill": skill, "cube_skill": round(cube_skill, 4), "seasons": series,
                                **{k: v for k, v in scored.items() if k not in ("probabilistic", "forecast")}})
                print(json.dumps(results[-1]), file=sys.stderr)
        best = max(results, key=lambda r: (r["skill"], -r["rmse"]))
        if args.score_only:
            table = args.run_dir / ("validation_table.json" if args.step is None else
                                    f"validation_table-step{args.step:06d}.json")
            table.write_text(json.dumps({"best": best, "candidates": results}, indent=1))
            print(json.dumps({"best": best, "table": str(table)}, indent=1))
            return 0
        chosen = export(base, args.run_dir / "diffusion" / best["checkpoint"], folder / "chosen.safetensors",
                        kind=best["kind"], extra={})
        added, per_lead = calibrate(cube, seasons, chosen, folder, members=args.calibration_members,
                                    guidance=best["guidance"])
        extra = {"recommended_guidance": str(best["guidance"]), "validation_cube": cube.name,
                 **validation_metadata(best), "validation_table": json.dumps(results),
                 **calibration_metadata(added, per_lead, members=args.calibration_members)}
        export(base, args.run_dir / "diffusion" / best["checkpoint"], output, kind=best["kind"], extra=extra)
        calibrated = score(cube, output, folder, members=args.calibration_members, guidance=best["guidance"],
                           calibrated=True)
    p = calibrated["probabilistic"]
    summary = {"chosen": best, "output": str(output), ADDED_KEY: added,
               "validation_after_calibration": {k: p.get(k) for k in ("crps", "mae_ensemble_mean", "spread_skill_ratio")}}
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
