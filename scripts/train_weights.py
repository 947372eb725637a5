"""Reproduce the shipped weights: both training stages on ../shared/data, two cubes held out.

    python scripts/train_weights.py                       # VAE, then denoiser (resumes if interrupted)
    python scripts/train_weights.py --stage diffusion     # only stage 2 (needs the stage-1 file)
    python scripts/select_weights.py                      # then: checkpoint and guidance on the validation cube

The test cube (HOLDOUT) is seen by neither stage; the validation cube (VALIDATION) is seen by the
VAE only (autoencoding its frames), never by the denoiser, and picks the shipped checkpoint.

Equivalent to `vegediff train vae ...` followed by `vegediff train diffusion ...` with the
arguments below; the run folder keeps resumable checkpoints and logs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from vegediff_cli.model.device import pick_device
from vegediff_cli.progress import tqdm_progress
from vegediff_cli.training.diffusion_train import DiffusionTrainSettings
from vegediff_cli.training.run import run_diffusion, run_vae
from vegediff_cli.training.vae_train import VAETrainSettings

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
HOLDOUT = "JAS2021_minicube_0_29SND"  # leave-one-cube-out test cube: scored in weights/MODEL_CARD.md
# Validation cube, also never trained on: picks the checkpoint and the guidance scale, so the test
# cube above is used for the final figures only.
VALIDATION = "minicube_29SND_39.17_-8.05_2017"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=["vae", "diffusion", "all"], default="all")
    parser.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "holdout-jas-val")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--vae-steps", type=int, default=3000)
    parser.add_argument("--diffusion-steps", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--keep-every", type=int, default=400, help="keep a denoiser checkpoint every N steps")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--output", type=Path, default=ROOT / "weights" / "vegediff-small.safetensors")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    device = pick_device("auto")
    progress = tqdm_progress()
    vae_file = args.run_dir / "vae.safetensors"
    if args.stage in ("vae", "all"):
        result = run_vae([SHARED], exclude=[HOLDOUT], preset_name=args.preset,
                         settings=VAETrainSettings(steps=args.vae_steps), run_dir=args.run_dir / "vae",
                         output=vae_file, device=device, progress=progress)
        print(json.dumps(result))
    if args.stage in ("diffusion", "all"):
        result = run_diffusion([SHARED], init=vae_file, exclude=[HOLDOUT, VALIDATION],
                               settings=DiffusionTrainSettings(steps=args.diffusion_steps, batch=args.batch,
                                                               keep_every=args.keep_every),
                               run_dir=args.run_dir / "diffusion", output=args.output, device=device,
                               progress=progress)
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
