"""Hindcast skill with scenario weather vs observed weather vs no weather, on the shared 29SND cubes.

For each cube, the 20 target frames are forecast from its 10 context frames three times with
the same weights, members and seed (library calls of `vegediff forecast`):

- observed: conditioned on the cube's own E-OBS series for the target period (`--weather none`,
  the cube covers every forecast date);
- scenarios: `--weather scenarios:YEAR,...`: the target period's meteorology replaced by the same
  calendar window of other years, fetched over HTTP from a loopback Open-Meteo archive API
  (tests/openmeteo_server.py) that serves the real E-OBS series of the shared 29SND minicubes;
- unconditional: the cube without meteorology (the model's condition-free branch).

Each is scored against the observed target (`vegediff evaluate`'s library, persistence baseline):
RMSE/NSE of the ensemble mean, fair CRPS and spread/skill of the members.

The shared data hold real weather at this site for two years only (2017: the EarthNet2021x
minicube at 39.17 N -8.05 E; 2021: the GreenEarthNet minicube at 39.29 N -8.56 E, 45 km apart),
so each hindcast's scenario ensemble has one other year (all members read it; they differ by
diffusion noise). Online, `--weather scenarios` draws one year per member from 1940 on.

    python benchmarks/scenario_skill.py [--members 8] [--steps 10] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.openmeteo_server import OpenMeteoServer, archive_from_minicubes  # noqa: E402
from vegediff_cli.config import CONTEXT_FRAMES, METEO_VARS, SamplerSettings, meteo_name  # noqa: E402
from vegediff_cli.cube.predictions import read_forecast  # noqa: E402
from vegediff_cli.cube.readers import open_cube  # noqa: E402
from vegediff_cli.pipeline.evaluate.scoring import score_cube  # noqa: E402
from vegediff_cli.pipeline.forecast.model import default_guidance  # noqa: E402
from vegediff_cli.pipeline.forecast.plan import ForecastSettings  # noqa: E402
from vegediff_cli.pipeline.forecast.run import ForecastJob, run_forecasts  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
JAS = SHARED / "greenearthnet" / "JAS2021_minicube_0_29SND_39.29_-8.56.nc"
EN21X = SHARED / "earthnet2021x" / "minicube_29SND_39.17_-8.05_2017.nc"
# cube, scenario years (the site's other year), steps: 2021's series ends on 10-06, so the 2017
# hindcast (from 08-13) can borrow 2021's weather for 11 steps only.
HINDCASTS = [(JAS, [2017], 20), (EN21X, [2021], 11)]


def without_meteo(cube: Path, folder: Path) -> Path:
    with xr.open_dataset(cube) as ds:
        dry = ds.drop_vars([meteo_name(v) for v in METEO_VARS if meteo_name(v) in ds]).load()
    path = folder / f"{cube.stem}_no_meteo.nc"
    dry.to_netcdf(path)
    return path


def run(cube: Path, weather: str, output: Path, *, members: int, steps: int, seed: int, guidance: float, horizon: int):
    target = open_cube(cube)
    start = pd.Timestamp(target["time"].values[CONTEXT_FRAMES])
    settings = ForecastSettings(members=members, seed=seed, start=start, horizon=horizon,
                                sampler=SamplerSettings(steps=steps, guidance_scale=guidance))
    [summary] = run_forecasts([ForecastJob(cube, output, weather=weather)], weights=None, settings=settings, device="cpu")
    return output, summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    guidance = default_guidance(None)
    archive = archive_from_minicubes([JAS, EN21X])
    rows, began = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, OpenMeteoServer(archive) as server:
        folder = Path(tmp)
        os.environ.update({"VEGEDIFF_OPEN_METEO_ARCHIVE_URL": server.archive_url, "VEGEDIFF_CACHE_DIR": str(folder / "cache"),
                           "VEGEDIFF_OPEN_METEO_FORECAST_URL": server.forecast_url})
        for cube, years, horizon in HINDCASTS:
            runs = {
                "observed weather": (cube, "none"),
                f"scenarios ({','.join(map(str, years))})": (cube, "scenarios:" + ",".join(map(str, years))),
                "unconditional": (without_meteo(cube, folder), "none"),
            }
            forecasts, labels = {}, {}
            for name, (source, weather) in runs.items():
                out = folder / f"{cube.stem}_{len(forecasts)}.nc"
                _, summary = run(source, weather, out, members=args.members, steps=args.steps, seed=args.seed,
                                 guidance=guidance, horizon=horizon)
                forecasts[name] = read_forecast(out).load()
                labels[name] = summary.meteo_source
            results, _, _ = score_cube(open_cube(cube).load(), forecasts, cube=cube.stem, baseline="persistence")
            for name, scores in results.items():
                p = scores.probabilistic or {}
                rows.append({"cube": cube.stem, "steps": horizon, "forecast": name, "meteo_source": labels[name],
                             "rmse": scores.headline["rmse"], "nse": scores.headline["nse"], "crps": p.get("crps"),
                             "spread": p.get("spread"), "spread_skill": p.get("spread_skill_ratio")})
            base = next(iter(results.values())).baseline
            rows.append({"cube": cube.stem, "steps": horizon, "forecast": "persistence", "meteo_source": "", "rmse": base.headline["rmse"],
                         "nse": base.headline["nse"], "crps": None, "spread": None, "spread_skill": None})
        requests, sent = len(server.requests("/v1/archive")), server.bytes_sent()
    if args.json:
        print(json.dumps(rows, default=float))
        return 0
    print("| cube | steps | forecast | RMSE | NSE | fair CRPS | spread | spread/skill |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['cube'][:24]} | {r['steps']} | {r['forecast']} | {fmt(r['rmse'])} | {fmt(r['nse'])} | {fmt(r['crps'])} | "
              f"{fmt(r['spread'])} | {fmt(r['spread_skill'], 3)} |")
    print(f"\n{args.members} members, euler {args.steps} steps, guidance {guidance}, seed {args.seed}; "
          f"{requests} archive request(s), {sent / 1e3:.0f} kB served; {time.perf_counter() - began:.0f} s", file=sys.stderr)
    return 0


def fmt(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


if __name__ == "__main__":
    sys.exit(main())
