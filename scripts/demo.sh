#!/usr/bin/env bash
# Install vegediff into .venv (CPU build of torch) and run the main job on the bundled sample,
# offline: prepare the cube, then write NDVI COGs. Outputs land in ./demo-output/.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "torch==2.13.0" -e .
out=demo-output
vegediff prepare --input sample_data/29SND_2017_sample.nc --output "$out/29SND/cube.nc" --cogs "$out/29SND/ndvi_cogs"
vegediff info --input "$out/29SND/cube.nc"
