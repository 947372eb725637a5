"""Combine denoisers trained with other seeds into one weights file (a deep ensemble), then calibrate it.

The base file (a selected weights file, e.g. the shipped one) gives the VAE, the config, the
guidance scale and the checkpoint choice (`selected_step`, `selected_weights`); each --run adds the
denoiser of that run's checkpoint at the same step and of the same kind (a run of the same recipe
with another `--seed`, sharing the base's VAE). Member m of a forecast is drawn by denoiser
m mod N (model/ensemble.py). The combined file is scored on the validation data of
scripts/select_weights.py (the EarthNet2021x cube and the held-out seasons of the long series) and
its spread calibrated there, as select_weights does for one denoiser; the test cube is never read.

    python scripts/train_weights.py --name shipped-seed1 --steps 3000 --seed 1    # the recipe, other seeds
    python scripts/train_weights.py --name shipped-seed2 --steps 3000 --seed 2
    python scripts/combine_weights.py --base weights/vegediff-small.safetensors \\
        --run runs/shipped-seed1 --run runs/shipped-seed2 --output runs/combined.safetensors
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.select_weights import (  # noqa: E402
    calibrate,
    calibration_metadata,
    export,
    score,
    score_seasons,
    season_validation_cubes,
    validation_cube,
    validation_metadata,
    validation_skill,
)
from vegediff_cli.model.ensemble import combine_denoisers  # noqa: E402
from vegediff_cli.model.weights import load_weights, read_metadata, save_weights  # noqa: E402
from vegediff_cli.pipeline.forecast.calibration import ADDED_KEY, SCALE_KEY  # noqa: E402

# Metadata of the base that describes one denoiser's validation, not the combination's: replaced.
REPLACED = (ADDED_KEY, SCALE_KEY, "spread_calibration", "validation_rmse", "validation_nse", "validation_skill",
            "validation_persistence_rmse", "validation_seasons")


def run_checkpoint(run_dir: Path, step: int) -> Path:
    path = run_dir / "diffusion" / f"diffusion-step{step:06d}.ckpt"
    if not path.exists():
        raise SystemExit(f"{path} does not exist: train {run_dir.name} to step {step} (scripts/train_weights.py)")
    return path


def combine_files(files: list[Path], output: Path, *, extra: dict[str, str]) -> Path:
    """Weights files of one recipe -> one file with all their denoisers (the first file's VAE and metadata)."""
    models = [load_weights(path)[0] for path in files]
    meta = {k: v for k, v in read_metadata(files[0]).items() if k not in REPLACED}
    sources = [{"file": path.name, "seed": json.loads(read_metadata(path).get("diffusion_settings", "{}")).get("seed"),
                "denoisers": model.cfg.denoisers} for path, model in zip(files, models, strict=True)]
    created = datetime.now(UTC).isoformat(timespec="seconds")
    return save_weights(combine_denoisers(models), output,
                        metadata={**meta, "created": created, "denoiser_sources": json.dumps(sources), **extra})


def seed_settings(run: Path) -> dict:
    """The training run's diffusion settings (its final weights' metadata), else its recipe's seed."""
    if (run / "final.safetensors").exists():
        return json.loads(read_metadata(run / "final.safetensors").get("diffusion_settings", "{}"))
    return {"seed": json.loads((run / "recipe.json").read_text()).get("seed")}


def validation(cube: Path, seasons: dict, weights: Path, folder: Path, *, members: int, guidance: float) -> dict:
    scored = score(cube, weights, folder, members=members, guidance=guidance, calibrated=True)
    series = score_seasons(seasons, weights, folder, members=members)
    cube_skill = 1 - scored["rmse"] / scored["persistence_rmse"]
    p = scored["probabilistic"] or {}
    return {"rmse": scored["rmse"], "nse": scored["nse"], "persistence_rmse": scored["persistence_rmse"],
            "direction": scored["direction"], "cube_skill": round(cube_skill, 4), "seasons": series,
            "skill": validation_skill(cube_skill, series),
            "crps": p.get("crps"), "mae_ensemble_mean": p.get("mae_ensemble_mean"),
            "spread_skill": p.get("spread_skill_ratio")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, required=True, help="selected weights file: VAE, config, checkpoint choice")
    parser.add_argument("--run", type=Path, action="append", default=[],
                        help="training run (runs/NAME) whose denoiser to add; repeat for several")
    parser.add_argument("--file", type=Path, action="append", default=[],
                        help="weights file whose denoiser to add as it is (e.g. scripts/train_gpu.py unpack's)")
    parser.add_argument("--guidance", type=float, default=None,
                        help="guidance scale of the cube's forecasts (default: the base's recommended_guidance)")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--validation", type=Path, default=None, help="validation cube (default: the EarthNet2021x one)")
    parser.add_argument("--members", type=int, default=16, help="members of the validation and calibration forecasts")
    args = parser.parse_args()
    if not args.run and not args.file:
        parser.error("give at least one --run or --file")
    meta = read_metadata(args.base)
    step, kind = (int(meta["selected_step"]), meta.get("selected_weights", "raw")) if args.run else (None, None)
    guidance = args.guidance if args.guidance is not None else float(meta.get("recommended_guidance", 1.0))
    cube = args.validation or validation_cube()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        parts = [args.base] + [export(args.base, run_checkpoint(run, step), folder / f"{run.name}.safetensors",
                                      kind=kind, extra={"diffusion_settings": json.dumps(seed_settings(run))})
                               for run in args.run] + args.file
        raw = combine_files(parts, folder / "combined-raw.safetensors", extra={})
        seasons = season_validation_cubes(folder)
        added, per_lead = calibrate(cube, seasons, raw, folder, members=args.members, guidance=guidance)
        extra = {**calibration_metadata(added, per_lead, members=args.members), "validation_cube": cube.name,
                 "recommended_guidance": str(guidance)}
        combine_files(parts, args.output, extra=extra)
        scores = validation(cube, seasons, args.output, folder, members=args.members, guidance=guidance)
        added_from = ", ".join([*(f"{r.name} at the same step ({step}) and kind ({kind})" for r in args.run),
                                *(f.name for f in args.file)])
        note = (f"denoiser 1 is {args.base.name}'s; denoisers 2-{len(parts)} are {added_from}; "
                f"member m is drawn by denoiser m mod {len(parts)}; guidance {guidance}. "
                "spread_added_variance, spread_calibration and validation_* were fitted and scored for them together "
                "(scripts/combine_weights.py); validation_table, where present, is the selection of denoiser 1")
        final = {**extra, "ensemble_note": note, **validation_metadata(scores)}
        combine_files(parts, args.output, extra=final)
    print(json.dumps({"output": str(args.output), "denoisers": len(parts), "step": step, "kind": kind,
                      "guidance": guidance, ADDED_KEY: added, "validation": scores}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
