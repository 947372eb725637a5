"""Held-out skill of a weights file on real cubes it never saw, in GreenEarthNet's terms.

For each cube: forecast the 20 target frames from its 10 context frames (`vegediff forecast`,
library call), then score the ensemble mean and the members against the observed target
(`vegediff evaluate`, library call) beside persistence, the context mean and, where
../shared/data holds them, the Contextformer reference predictions. Prints a Markdown table
(the one in weights/MODEL_CARD.md) and, with --json, the full scores on stdout.

    python benchmarks/heldout_skill.py                                  # shipped weights, JAS2021 29SND
    python benchmarks/heldout_skill.py --weights runs/x.safetensors --members 16 --cube PATH
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from vegediff_cli.config import CONTEXT_FRAMES, SamplerSettings
from vegediff_cli.cube.predictions import read_forecast
from vegediff_cli.cube.readers import open_cube
from vegediff_cli.metrics.deterministic import ALL_VALID, GREENEARTHNET, QUALITY_RULES, QualityRule
from vegediff_cli.pipeline.evaluate.baselines import baseline_forecast
from vegediff_cli.pipeline.evaluate.scoring import EvaluationSettings, score_cube
from vegediff_cli.pipeline.forecast.model import default_guidance
from vegediff_cli.pipeline.forecast.plan import ForecastSettings
from vegediff_cli.pipeline.forecast.run import ForecastJob, run_forecasts

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "greenearthnet"
DEFAULT_CUBE = SHARED / "JAS2021_minicube_0_29SND_39.29_-8.56.nc"
METRICS = ("rmse", "nse", "r2", "abs_bias", "direction", "n_pixels")
# `vegediff evaluate --pixels` rules, and every pixel that the forecast and persistence both cover (a clear
# context frame, `vegediff forecast`'s min_clear_context 1) with a clear target observation, any land cover,
# as one group (the mean over pixels: land-cover groups of a few pixels would weigh as much as the cropland):
# GreenEarthNet's rule keeps 14 of the cloudy 34VCL cube's 16,384 pixels.
PIXEL_RULES = {**QUALITY_RULES, "clear": dataclasses.replace(ALL_VALID, min_context_obs=1, by_landcover=False)}


def forecast_cube(cube: Path, folder: Path, *, weights: Path | None, members: int, steps: int, seed: int,
                  guidance: float = 2.0, sampler: str = "euler", precision: str = "auto",
                  calibrate_spread: bool = True) -> Path:
    """Forecast the frames after the cube's first CONTEXT_FRAMES frames; returns forecast.nc."""
    target = open_cube(cube)
    start = pd.Timestamp(target["time"].values[CONTEXT_FRAMES])
    settings = ForecastSettings(members=members, seed=seed, start=start, horizon=target.sizes["time"] - CONTEXT_FRAMES,
                                sampler=SamplerSettings(sampler=sampler, steps=steps, guidance_scale=guidance),
                                precision=precision, calibrate_spread=calibrate_spread)
    output = folder / f"{cube.stem}_forecast.nc"
    run_forecasts([ForecastJob(cube, output)], weights=weights, settings=settings, device="cpu")
    return output


def skill_rows(cube: Path, forecast: Path, quality: QualityRule = GREENEARTHNET) -> tuple[list[dict], dict]:
    """One row per forecast (model, baselines, reference) with the headline metrics, over the pixels
    `quality` scores (GreenEarthNet's high-quality vegetation pixels by default; `n_pixels` says how many)."""
    target = open_cube(cube).load()
    model = read_forecast(forecast).load()
    dates = pd.DatetimeIndex(model["time"].values)
    forecasts = {"vegediff": model}
    forecasts["context-mean"] = baseline_forecast("context-mean", target, dates, context_frames=CONTEXT_FRAMES)
    reference = SHARED / "reference_predictions" / "contextformer" / cube.name
    if reference.exists():
        forecasts["contextformer"] = read_forecast(reference).load()
    results, _, _ = score_cube(target, forecasts, cube=cube.stem, baseline="persistence",
                               settings=EvaluationSettings(quality=quality))
    rows = []
    persistence = results["vegediff"].baseline
    for name, scores in [("persistence", persistence), *results.items()]:
        rows.append({"cube": cube.stem, "forecast": name, **{m: scores.headline.get(m, float("nan")) for m in METRICS}})
    probabilistic = results["vegediff"].probabilistic or {}
    return rows, {"probabilistic": probabilistic, "scores": {n: s.to_dict() for n, s in results.items()}}


def markdown(rows: list[dict], probabilistic: dict[str, dict]) -> str:
    lines = ["| cube | forecast | RMSE | NSE | R2 | abs bias | direction | pixels |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['cube']} | {r['forecast']} | {r['rmse']:.4f} | {r['nse']:.4f} | {r['r2']:.4f} | "
                     f"{r['abs_bias']:.4f} | {r['direction']:.3f} | {r['n_pixels']:.0f} |")
    lines += ["", "| cube | members | fair CRPS | MAE of ensemble mean | spread | RMSE of ensemble mean | spread/skill |",
              "|---|---|---|---|---|---|---|"]
    for cube, p in probabilistic.items():
        if p.get("samples"):
            lines.append(f"| {cube} | {p['members']} | {p['crps']:.4f} | {p['mae_ensemble_mean']:.4f} | "
                         f"{p['spread']:.4f} | {p['rmse_ensemble_mean']:.4f} | {p['spread_skill_ratio']:.3f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cube", type=Path, action="append", help="held-out cube(s); default: JAS2021 29SND")
    parser.add_argument("--weights", type=Path, default=None, help="default: the shipped weights")
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--guidance", type=float, default=None,
                        help="classifier-free guidance scale (default: the weights' recommended scale, else the paper's 2)")
    parser.add_argument("--sampler", default="euler", help="euler (paper) or dpmpp2m")
    parser.add_argument("--precision", default="auto", help="auto (bf16 where native), fp32 or bf16")
    parser.add_argument("--pixels", choices=tuple(PIXEL_RULES), default="greenearthnet",
                        help="pixels scored: GreenEarthNet's high-quality vegetation pixels, every pixel with a valid "
                             "target observation (both as `vegediff evaluate --pixels`), or those of them with a clear "
                             "context frame too (every forecast covers them), averaged over pixels as one group")
    parser.add_argument("--json", action="store_true", help="full scores as JSON on stdout")
    args = parser.parse_args()
    cubes = args.cube or [DEFAULT_CUBE]
    if args.guidance is None:
        args.guidance = default_guidance(args.weights)
    rows, details = [], {}
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for cube in cubes:
            forecast = forecast_cube(cube, Path(tmp), weights=args.weights, members=args.members, steps=args.steps,
                                     seed=args.seed, guidance=args.guidance, sampler=args.sampler,
                                     precision=args.precision)
            cube_rows, details[cube.stem] = skill_rows(cube, forecast, PIXEL_RULES[args.pixels])
            rows += cube_rows
    if args.json:
        print(json.dumps({"rows": rows, "details": details}, default=float))
    else:
        print(markdown(rows, {c: d["probabilistic"] for c, d in details.items()}))
        print(f"\n{len(cubes)} cube(s), {args.members} members, {args.sampler} {args.steps} steps, guidance "
              f"{args.guidance}, seed {args.seed}, precision {args.precision}, {args.pixels} pixels, "
              f"{time.perf_counter() - began:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
