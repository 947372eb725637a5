"""Train the shipped weights, or one variant of them, on ../shared/data with the held-out cubes left out.

    python scripts/train_weights.py                                  # the shipped recipe -> runs/shipped/
    python scripts/train_weights.py --name no-dates --no-dates       # an ablation (weights/MODEL_CARD.md)
    python scripts/train_weights.py --name loso-34VCL --exclude MJJ2021_minicube_241_34VCL   # one LOSO fold
    python scripts/select_weights.py --run-dir runs/shipped          # then: checkpoint, guidance, spread on validation

The test cube (HOLDOUT) is seen by nothing. Validation, never seen by the denoiser, picks the
checkpoint, the guidance scale and the ensemble's spread calibration: the EarthNet2021x cube
(VALIDATION) and the last season of each long series (training/validation.py HELD_OUT_SEASONS:
Rhone valley 2019, Romanian forest 2020-21), which training therefore never sees.

The VAE (stage 1) is the one inside ``--vae-from`` (default: the previous release's weights,
runs/previous-release.safetensors, or the shipped file, whose VAE part it is); ``--stage vae``
retrains it first. The denoiser (stage 2) starts from scratch with the `small` preset: the
paper's VegeNet plus the documented departures (residual, causal context, date features, erf
GELU, noise offset in training), each of which the flags below can switch off for an ablation.
Equivalent to `vegediff train diffusion --preset small ...`; the run folder keeps resumable
checkpoints, kept copies for selection (`--keep-every`) and the log (diffusion-log.jsonl). The
encoded latents and the data index are shared by every run in runs/ (runs/latent-cache, keyed
by the VAE's weights; runs/data-index.json), so a new variant starts training at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

import torch

from vegediff_cli.atomic import atomic_file
from vegediff_cli.model.device import pick_device
from vegediff_cli.model.presets import preset
from vegediff_cli.model.vegenet import METEOROLOGY
from vegediff_cli.progress import tqdm_progress
from vegediff_cli.training.diffusion_train import DiffusionTrainSettings
from vegediff_cli.training.run import run_diffusion, run_vae
from vegediff_cli.training.vae_train import VAETrainSettings
from vegediff_cli.training.validation import HELD_OUT_SEASONS

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
HOLDOUT = "JAS2021_minicube_0_29SND"  # test cube: scored in weights/MODEL_CARD.md, never trained on
# Validation cube, never seen by the denoiser: picks the checkpoint, the guidance scale and the spread
# calibration, so the test cube above is used for the final figures only.
VALIDATION = "minicube_29SND_39.17_-8.05_2017"
SHIPPED = ROOT / "weights" / "vegediff-small.safetensors"
LATENT_CACHE = ROOT / "runs" / "latent-cache"  # encoded training latents, shared by runs with the same VAE
INDEX_CACHE = ROOT / "runs" / "data-index.json"  # description of the training files, shared by runs


def default_vae() -> Path:
    previous = ROOT / "runs" / "previous-release.safetensors"
    return previous if previous.exists() else SHIPPED


def denoiser_config(args: argparse.Namespace):
    """The preset's denoiser with the ablation flags applied."""
    cfg = preset(args.preset)
    vegenet = cfg.vegenet if not args.no_dates else dataclasses.replace(cfg.vegenet, date_channels=0)
    if args.meteorology is not None:
        vegenet = dataclasses.replace(vegenet, meteorology=args.meteorology)
    if args.train_mix == "preset":
        mix = cfg.diffusion.train_context_mix
    else:
        mix = None if args.train_mix == "none" else float(args.train_mix)
    dropout = cfg.diffusion.cond_dropout if args.cond_dropout is None else args.cond_dropout
    meteo_dropout = cfg.diffusion.meteo_dropout if args.meteo_dropout is None else args.meteo_dropout
    if not (0 <= dropout and 0 <= meteo_dropout and dropout + meteo_dropout <= 1):
        raise SystemExit(f"--cond-dropout {dropout} and --meteo-dropout {meteo_dropout}: each at least 0, "
                         "together at most 1 (they are shares of one uniform draw per window)")
    return dataclasses.replace(cfg, vegenet=vegenet, diffusion=dataclasses.replace(
        cfg.diffusion, train_context_mix=mix, cond_dropout=dropout, meteo_dropout=meteo_dropout))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="shipped", help="run folder runs/NAME")
    parser.add_argument("--stage", choices=["vae", "diffusion", "all"], default="diffusion")
    parser.add_argument("--vae-from", type=Path, default=None, help="weights file whose VAE is used (default: previous release)")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--vae-steps", type=int, default=3000)
    parser.add_argument("--steps", type=int, default=4000, help="denoiser optimiser steps")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--series-fraction", type=float, default=0.4,
                        help="share of batches from sequences of other spatial sizes (the long 20 m and L1C series)")
    parser.add_argument("--keep-every", type=int, default=500, help="keep a denoiser checkpoint every N steps")
    parser.add_argument("--exclude", action="append", default=[], help="also hold out files containing this text")
    parser.add_argument("--no-dates", action="store_true", help="ablation: no day-of-year/latitude features (paper)")
    parser.add_argument("--meteorology", choices=METEOROLOGY, default=None,
                        help="how the meteorology enters (default: the preset's, absolute; model/presets.py)")
    parser.add_argument("--train-mix", default="preset",
                        help="noise offset in training: preset (the preset's, 0.1), none (legacy), 0, or a value")
    parser.add_argument("--cond-dropout", type=float, default=None,
                        help="probability of dropping meteorology and static layers in training (default: the preset's, 0.1)")
    parser.add_argument("--meteo-dropout", type=float, default=None,
                        help="extra probability of dropping the meteorology alone in training (default: the preset's, 0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest for this model)")
    parser.add_argument("--precision", default="auto", help="training autocast: auto, fp32, bf16")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (0: none)")
    args = parser.parse_args()
    denoiser = denoiser_config(args)  # refuses impossible settings before any folder is written
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    device = pick_device("auto")
    progress = tqdm_progress()
    run_dir = ROOT / "runs" / args.name
    run_dir.mkdir(parents=True, exist_ok=True)
    held_out = [HOLDOUT, VALIDATION, *args.exclude]
    vae_file = run_dir / "vae.safetensors" if args.stage in ("vae", "all") else args.vae_from or default_vae()
    # written before training, so a run in progress or interrupted already says how it is made (loso_skill reads it)
    with atomic_file(run_dir / "recipe.json") as tmp:
        tmp.write_text(json.dumps({**vars(args), "vae_from": str(vae_file), "held_out": held_out}, default=str, indent=1))
    if args.stage in ("vae", "all"):
        result = run_vae([SHARED], exclude=[HOLDOUT, *args.exclude], preset_name=args.preset,
                         settings=VAETrainSettings(steps=args.vae_steps, workers=args.workers), run_dir=run_dir / "vae",
                         output=vae_file, device=device, progress=progress, index_cache=INDEX_CACHE,
                         held_out_seasons=HELD_OUT_SEASONS)
        print(json.dumps(result))
    if args.stage in ("diffusion", "all"):
        settings = DiffusionTrainSettings(steps=args.steps, batch=args.batch, keep_every=args.keep_every,
                                          series_fraction=args.series_fraction, seed=args.seed, precision=args.precision,
                                          workers=args.workers)
        result = run_diffusion([SHARED], init=vae_file, exclude=held_out, settings=settings,
                               run_dir=run_dir / "diffusion", output=run_dir / "final.safetensors", device=device,
                               progress=progress, denoiser=denoiser, latent_cache=LATENT_CACHE,
                               index_cache=INDEX_CACHE, held_out_seasons=HELD_OUT_SEASONS)
        result["vae_from"] = str(vae_file)
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
