#!/usr/bin/env bash
# Install vegediff into .venv (CPU build of torch) and run the main job on the bundled sample,
# offline: prepare the cube, forecast 20 five-day steps with 8 diffusion members from the
# shipped weights (hindcast from 2017-08-13, so the forecast can be scored), summarise the
# ensemble, and score it against the observations. Outputs land in ./demo-output/29SND/.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh  # .venv made anew when another python3 made it, activated
python -m pip install -q "torch==2.13.0" -e .
work=demo-output
vegediff prepare  --input sample_data/29SND_2017_sample.nc --tile 29SND --workdir "$work"
vegediff ensemble --tile 29SND --workdir "$work" --members 8 --start 2017-08-13
vegediff evaluate --tile 29SND --workdir "$work"
echo "done: $work/29SND/ holds forecast.nc, ensemble.nc, COGs for QGIS (forecast_cogs/, ensemble_cogs/) and evaluation/" >&2
