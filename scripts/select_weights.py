"""Pick the shipped denoiser checkpoint and guidance scale on the validation cube (never the test cube).

Every checkpoint that `scripts/train_weights.py --keep-every N` kept (its EMA and its raw
weights) is turned into a weights file and forecast on the validation cube for each guidance
scale; the combination with the lowest GreenEarthNet RMSE (NSE breaking ties) wins and is
written, with the choice recorded in its metadata (`recommended_guidance`, `selected_step`,
`selected_weights`, `validation_*`).

    python scripts/train_weights.py && python scripts/select_weights.py   # train, then select in place
    python scripts/select_weights.py --guidance 0.5 1 2 --members 8

Candidates carry the training data's `meteo_coverage`, so they are scored as forecasts will run
them (variables the denoiser hardly saw left at the mean).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.heldout_skill import forecast_cube, skill_rows  # noqa: E402
from scripts.train_weights import HOLDOUT, ROOT, SHARED, VALIDATION  # noqa: E402
from vegediff_cli.model.weights import load_weights, read_metadata, save_weights  # noqa: E402
from vegediff_cli.training.checkpoint import load_checkpoint  # noqa: E402
from vegediff_cli.training.run import select_sequences  # noqa: E402
from vegediff_cli.training.sequences import meteo_coverage  # noqa: E402

KINDS = {"ema": "ema", "raw": "vegenet"}  # weights kind -> key in the training checkpoint


def export(vae_or_full: Path, checkpoint: Path, output: Path, *, kind: str, extra: dict[str, str]) -> Path:
    """VAE (and config) from `vae_or_full` + the `kind` denoiser weights of `checkpoint` -> weights file."""
    model, metadata = load_weights(vae_or_full)
    state = load_checkpoint(checkpoint)
    model.vegenet.load_state_dict(state[KINDS[kind]])
    return save_weights(model, output, metadata={**metadata, **extra, "selected_step": str(state["step"]),
                                                 "selected_weights": kind})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "holdout-jas-val")
    parser.add_argument("--final", type=Path, default=None,
                        help="weights file the training run wrote (its metadata is kept); default: --output")
    parser.add_argument("--validation", type=Path, default=None, help="validation cube (default: the EarthNet2021x one)")
    parser.add_argument("--guidance", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--kinds", nargs="+", choices=list(KINDS), default=list(KINDS))
    parser.add_argument("--output", type=Path, default=ROOT / "weights" / "vegediff-small.safetensors")
    args = parser.parse_args()
    cube = args.validation or next((SHARED / "earthnet2021x").glob(f"{VALIDATION}*.nc"))
    base = args.final or args.output
    coverage = {}
    if "meteo_coverage" not in read_metadata(base):  # runs before the trainer recorded it: same data, same numbers
        sequences, _ = select_sequences([SHARED], [HOLDOUT, VALIDATION])
        coverage = {"meteo_coverage": json.dumps(meteo_coverage(sequences))}
    kept = sorted((args.run_dir / "diffusion").glob("diffusion-step*.ckpt"))
    if not kept:
        print(f"no kept checkpoints in {args.run_dir / 'diffusion'}", file=sys.stderr)
        return 2
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for checkpoint, kind in ((c, k) for c in kept for k in args.kinds):
            weights = export(base, checkpoint, Path(tmp) / f"{checkpoint.stem}-{kind}.safetensors", kind=kind,
                             extra=coverage)
            for guidance in args.guidance:
                forecast = forecast_cube(cube, Path(tmp), weights=weights, members=args.members, steps=10, seed=0,
                                         guidance=guidance)
                rows, _ = skill_rows(cube, forecast)
                model = next(r for r in rows if r["forecast"] == "vegediff")
                persistence = next(r for r in rows if r["forecast"] == "persistence")
                results.append({"checkpoint": checkpoint.name, "kind": kind, "guidance": guidance, "rmse": model["rmse"],
                                "nse": model["nse"], "persistence_rmse": persistence["rmse"]})
                print(json.dumps(results[-1]), file=sys.stderr)
    best = min(results, key=lambda r: (round(r["rmse"], 4), -r["nse"]))
    chosen = args.run_dir / "diffusion" / best["checkpoint"]
    extra = {**coverage, "recommended_guidance": str(best["guidance"]), "validation_cube": cube.name,
             "validation_rmse": f"{best['rmse']:.4f}", "validation_nse": f"{best['nse']:.4f}",
             "validation_persistence_rmse": f"{best['persistence_rmse']:.4f}",
             "validation_table": json.dumps(results)}
    export(base, chosen, args.output, kind=best["kind"], extra=extra)
    print(json.dumps({"chosen": best, "output": str(args.output), "metadata": {
        k: v for k, v in read_metadata(args.output).items() if k != "validation_table"}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
