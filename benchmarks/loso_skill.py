"""Leave-one-site-out skill: the shipped training recipe, retrained with each conditioned site held out.

Folds (conditioned sites of ../shared/data; the shipped recipe already leaves out the GreenEarthNet
29SND 2021 test cube and the EarthNet2021x 29SND 2017 validation cube, so every fold leaves out
those two as well as its own site):

    29SND-2021   GreenEarthNet JAS2021 29SND (Portugal, summer drying)      = the shipped recipe itself
    34VCL-2021   GreenEarthNet MJJ2021 34VCL (Sweden, spring green-up)
    29SND-2017   EarthNet2021x 29SND 2017 + the EarthNet2021 29SND sample (Portugal, Jun-Nov)
    29SQC-2017   the five EarthNet2021 29SQC samples (Portugal, Jul-Nov)

Each fold repeats a training run's recipe (`--recipe-run runs/NAME`, default runs/shipped: its
recipe.json's steps, seed, mix and exclusions) with the fold's site excluded as well
(`scripts/train_weights.py --name loso-FOLD --exclude ...`, or loso-NAME-FOLD for another recipe); the
recipe run itself is the 29SND-2021 fold. Each fold
takes the last checkpoint's weights of the kind and the guidance the recipe run's selection chose
(RECIPE_RUN/selected.safetensors, else the shipped file's; --shipped FILE to choose), fits
the spread calibration on its validation data as scripts/select_weights.py does (the held-out seasons of the long series and a cube: the
EarthNet2021x cube; for the 29SND-2017 fold, which holds it out, the JAS2021 cube), forecasts its held-out cubes and scores them beside persistence,
the context mean and, where a cube has earlier years, climatology. None of these cubes has earlier
years, so climatology is n/a here.

    python benchmarks/loso_skill.py --train --steps 3000     # train the missing folds (hours on a CPU), then score
    python benchmarks/loso_skill.py                          # score the folds already trained in runs/
    python benchmarks/loso_skill.py --fold 34VCL-2021 --members 16 --json
    python benchmarks/loso_skill.py --fold 29SQC-2017 --training-seed 1 --train   # the fold again, training seed 1
    python benchmarks/loso_skill.py --fold 29SQC-2017 --combine-seeds 0 1 2        # its three runs as one deep ensemble
    python benchmarks/loso_skill.py --recipe-run runs/s1500-no-32UQC --train   # another recipe's folds and selection
    python benchmarks/loso_skill.py --fold 34VCL-2021 --pixels greenearthnet clear  # also every clear pixel
    python benchmarks/loso_skill.py --fold 34VCL-2021 --files runs/loso-base-gpu-34VCL-2021-seed*/final.safetensors
                                                             # a fold trained on a GPU (scripts/train_gpu.py)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.heldout_skill import PIXEL_RULES, forecast_cube, skill_rows  # noqa: E402
from scripts.combine_weights import combine_files  # noqa: E402
from scripts.select_weights import calibrate, export_last, season_validation_cubes  # noqa: E402
from scripts.train_weights import ROOT, SHARED  # noqa: E402
from vegediff_cli.model.weights import read_metadata  # noqa: E402
from vegediff_cli.pipeline.forecast.calibration import ADDED_KEY  # noqa: E402

JAS = SHARED / "greenearthnet" / "JAS2021_minicube_0_29SND_39.29_-8.56.nc"
MJJ = SHARED / "greenearthnet" / "MJJ2021_minicube_241_34VCL_59.04_17.96.nc"
EN21X = SHARED / "earthnet2021x" / "minicube_29SND_39.17_-8.05_2017.nc"
EN21 = SHARED / "earthnet2021" / "context"
DEFAULT_RECIPE = ROOT / "runs" / "shipped"  # the shipped recipe: train_weights.py's defaults, 3000 steps


@dataclass(frozen=True)
class Fold:
    name: str
    exclude: tuple[str, ...]  # file-name parts held out of training, beyond the recipe's two
    tests: tuple[Path, ...]  # held-out cubes scored
    validation: Path  # cube the fold's spread calibration is fitted on

    def run_dir(self, recipe: Path, seed: int | None = None) -> Path:
        """The fold's training run: the recipe run itself for 29SND-2021 (it holds out that cube); with a
        training `seed` (a repeat of the recipe for run-to-run spread), the same name ending in -seedN."""
        suffix = "" if seed is None else f"-seed{seed}"
        if self.name == "29SND-2021":
            return recipe.parent / f"{recipe.name}{suffix}" if suffix else recipe
        prefix = "loso" if recipe.name == "shipped" else f"loso-{recipe.name}"
        return recipe.parent / f"{prefix}-{self.name}{suffix}"


def folds() -> list[Fold]:
    return [
        Fold("29SND-2021", (), (JAS,), EN21X),
        Fold("34VCL-2021", ("MJJ2021_minicube_241_34VCL",), (MJJ,), EN21X),
        Fold("29SND-2017", ("context_29SND_2017",), (EN21X, *sorted(EN21.glob("context_29SND_2017*.npz"))), JAS),
        Fold("29SQC-2017", ("context_29SQC_2017",), tuple(sorted(EN21.glob("context_29SQC_2017*.npz"))), EN21X),
    ]


def recipe_settings(recipe: Path) -> dict:
    """The recipe run's recipe.json (scripts/train_weights.py's settings); {} for the default runs/shipped
    without one (the shipped recipe: train_weights.py's defaults, with train_command's 3000 steps). Any
    other run without it is refused: its folds would silently train the defaults instead of its recipe."""
    if (recipe / "recipe.json").exists():
        return json.loads((recipe / "recipe.json").read_text())
    if recipe.resolve() == DEFAULT_RECIPE.resolve():
        return {}
    raise SystemExit(f"{recipe}: no recipe.json, so its recipe is unknown; train it with scripts/train_weights.py "
                     f"(which writes recipe.json when it starts) or pass --recipe-run {DEFAULT_RECIPE}")


def own_seeds(recipe: Path, seeds: list[int | None]) -> list[int | None]:
    """Training seeds as Fold.run_dir and train_command take them: the recipe's own seed is None (its run)."""
    recipe_seed = recipe_settings(recipe).get("seed", 0)
    return [None if seed == recipe_seed else seed for seed in seeds]


def train_command(fold: Fold, recipe: Path, steps: int | None, seed: int | None = None) -> list[str]:
    """scripts/train_weights.py with the recipe run's settings (runs/NAME/recipe.json) and the fold's site
    excluded too; `steps` and the training `seed` override the recipe's."""
    settings = recipe_settings(recipe)
    if seed is not None:
        settings["seed"] = seed
    command = [sys.executable, str(ROOT / "scripts" / "train_weights.py"), "--name",
               fold.run_dir(recipe, seed).name, "--steps", str(steps or settings.get("steps", 3000))]
    for key in ("seed", "batch", "series_fraction", "train_mix", "preset"):
        if key in settings:
            command += [f"--{key.replace('_', '-')}", str(settings[key])]
    if settings.get("no_dates"):
        command.append("--no-dates")
    if settings.get("cond_dropout") is not None:
        command += ["--cond-dropout", str(settings["cond_dropout"])]
    if settings.get("meteorology") is not None:
        command += ["--meteorology", settings["meteorology"]]
    if settings.get("meteo_dropout") is not None:
        command += ["--meteo-dropout", str(settings["meteo_dropout"])]
    for part in (*settings.get("exclude", ()), *fold.exclude):
        command += ["--exclude", part]
    return command


def fold_weights(fold: Fold, run_dirs: list[Path], folder: Path, *, selection: dict[str, str],
                 members: int, files: list[Path] | None = None) -> tuple[Path, float]:
    """The fold's weights: last checkpoint of each run in one file (several runs: all their denoisers,
    scripts/combine_weights.py), the selection's kind and guidance (metadata of the recipe run's
    selected weights), its own spread calibration. With `files`: their denoisers as they are
    instead of the runs' (weights trained elsewhere, e.g. scripts/train_gpu.py's)."""
    guidance = float(selection.get("recommended_guidance", 1.0))
    kind = selection.get("selected_weights", "ema")
    parts = files or [export_last(run, folder / f"{fold.name}-{run.name}-raw.safetensors", kind=kind, extra={})
                      for run in run_dirs]
    raw = combine_files(parts, folder / f"{fold.name}-raw.safetensors", extra={})
    seasons = season_validation_cubes(folder)
    added, _ = calibrate(fold.validation, seasons, raw, folder, members=members, guidance=guidance)
    extra = {"recommended_guidance": str(guidance), ADDED_KEY: json.dumps(added)}
    return combine_files(parts, folder / f"{fold.name}.safetensors", extra=extra), guidance


def score_fold(fold: Fold, run_dirs: list[Path], *, selection: dict[str, str], members: int, seed: int,
               files: list[Path] | None = None, pixels: tuple[str, ...] = ("greenearthnet",)) -> list[dict]:
    """Rows of the fold's held-out cubes, one forecast per cube scored under each rule of `pixels`
    (heldout_skill.PIXEL_RULES names; the row's `pixels` says which, `n_pixels` how many it scored)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        weights, guidance = fold_weights(fold, run_dirs, folder, selection=selection, members=members, files=files)
        for cube in fold.tests:
            forecast = forecast_cube(cube, folder, weights=weights, members=members, steps=10, seed=seed,
                                     guidance=guidance)
            for rule in pixels:
                cube_rows, details = skill_rows(cube, forecast, PIXEL_RULES[rule])
                p = details["probabilistic"] or {}
                for row in cube_rows:
                    row.update({"fold": fold.name, "pixels": rule})
                    if row["forecast"] == "vegediff":
                        row.update({"crps": p.get("crps"), "mae_ensemble_mean": p.get("mae_ensemble_mean"),
                                    "spread_skill": p.get("spread_skill_ratio")})
                rows += cube_rows
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| fold | cube | pixels | forecast | RMSE | NSE | R2 | direction | fair CRPS | MAE of mean | spread/skill |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    def fmt(value, digits: int = 4) -> str:
        return "" if value is None else f"{value:.{digits}f}"

    for r in rows:
        lines.append(f"| {r['fold']} | {r['cube'][:40]} | {r['pixels']} {fmt(r['n_pixels'], 0)} | "
                     f"{r['forecast']} | {fmt(r['rmse'])} | {fmt(r['nse'])} | "
                     f"{fmt(r['r2'])} | {fmt(r.get('direction'), 3)} | {fmt(r.get('crps'))} | "
                     f"{fmt(r.get('mae_ensemble_mean'))} | {fmt(r.get('spread_skill'), 3)} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fold", action="append", help="only these folds (default: all)")
    parser.add_argument("--train", action="store_true", help="train folds whose run folder is missing")
    parser.add_argument("--recipe-run", type=Path, default=DEFAULT_RECIPE,
                        help="training run whose recipe.json the folds repeat (it is the 29SND-2021 fold itself)")
    parser.add_argument("--steps", type=int, default=None,
                        help="denoiser steps of a fold trained with --train (default: the recipe run's)")
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0, help="sampling seed of the forecasts")
    parser.add_argument("--training-seed", type=int, default=None,
                        help="the folds' runs with this training seed instead of the recipe's (run folders "
                             "ending in -seedN; with --train, 29SND-2021 too is retrained): run-to-run spread")
    parser.add_argument("--combine-seeds", type=int, nargs="+", default=None, metavar="SEED",
                        help="score one weights file with the denoisers of the folds' runs of these training seeds "
                             "(the recipe's own seed: its run; others: -seedN runs), members drawn in turn: a deep "
                             "ensemble (model/ensemble.py)")
    parser.add_argument("--shipped", type=Path, default=None,
                        help="weights whose selection (kind, guidance) the folds reuse (default: RECIPE_RUN/"
                             "selected.safetensors where it exists, else the shipped weights)")
    parser.add_argument("--files", type=Path, nargs="+", default=None, metavar="FILE",
                        help="score one --fold with these weights files' denoisers (trained with that fold's site "
                             "held out elsewhere, e.g. on a GPU by scripts/train_gpu.py) instead of its runs")
    parser.add_argument("--pixels", nargs="+", choices=tuple(PIXEL_RULES), default=["greenearthnet"],
                        help="pixels scored (benchmarks/heldout_skill.py's PIXEL_RULES; several: each, from the same "
                             "forecasts): GreenEarthNet's rule keeps 14 of the cloudy 34VCL cube's pixels, `clear` the "
                             "14,584 with a clear context frame and a clear target observation")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    chosen = [f for f in folds() if not args.fold or f.name in args.fold]
    selected = args.recipe_run / "selected.safetensors"
    selection = read_metadata(args.shipped or (selected if selected.exists() else
                                             ROOT / "weights" / "vegediff-small.safetensors"))
    rows = []
    if args.files:
        if len(chosen) != 1:
            parser.error("--files scores one fold: name it with --fold")
        held_out = [json.loads(read_metadata(f).get("held_out", "[]")) for f in args.files]
        if not all(any(part in name for name in h for part in chosen[0].exclude) for h in held_out):
            parser.error(f"--files: a file's held_out metadata does not name {chosen[0].name}'s site")
        chosen, rows = [], score_fold(chosen[0], [], selection=selection, members=args.members, seed=args.seed,
                                      files=args.files, pixels=tuple(args.pixels))
    for fold in chosen:
        seeds = own_seeds(args.recipe_run, args.combine_seeds or [args.training_seed])
        run_dirs = [fold.run_dir(args.recipe_run, seed) for seed in seeds]
        missing = [run for run in run_dirs if not (run / "final.safetensors").exists()]
        if missing and (not args.train or args.recipe_run in missing):
            print(f"{fold.name}: not trained ({', '.join(map(str, missing))} missing); pass --train", file=sys.stderr)
            continue
        for run, seed in zip(run_dirs, seeds, strict=True):
            if run in missing:
                subprocess.run(train_command(fold, args.recipe_run, args.steps, seed), check=True)
        rows += score_fold(fold, run_dirs, selection=selection, members=args.members, seed=args.seed,
                           pixels=tuple(args.pixels))
        print(markdown([r for r in rows if r["fold"] == fold.name]), file=sys.stderr)
    print(json.dumps(rows, default=float) if args.json else markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
