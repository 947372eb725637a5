#!/usr/bin/env bash
# The package as users install it: build the sdist and, from it, the wheel; install the wheel (not
# editable) with the CPU build of torch into a fresh venv; from outside the checkout, check that
# `vegediff --version` names the weights inside the installed package, and forecast the bundled
# sample (forecast.nc, COGs and the QGIS project). Uses .venv from scripts/test.sh for `build`;
# pip's cache makes the second install of the dependencies a local copy. CI runs it after the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$(mktemp -d "${TMPDIR:-/tmp}/vegediff-wheel.XXXXXX")
trap 'rm -rf "$work"' EXIT
if ! .venv/bin/python -m build --no-isolation --outdir "$work/dist" . > "$work/build.log" 2>&1; then
    cat "$work/build.log" >&2
    exit 1
fi
wheel=$(ls "$work"/dist/vegediff_cli-*.whl)
python3 -m venv "$work/venv"
# --no-compile: byte-compiling every installed module (torch's thousands) costs twice the install
# itself; Python compiles the few modules a run imports when it imports them.
"$work/venv/bin/python" -m pip install -q --no-compile "torch==2.13.0" "$wheel"
cd "$work"  # away from the checkout: only the installed package can be imported
vegediff="$work/venv/bin/vegediff"
version=$(env -u VEGEDIFF_WEIGHTS "$vegediff" --version)
echo "$version"
sha=$(sha256sum "$root/weights/vegediff-small.safetensors" | cut -d' ' -f1)
case "$version" in
    *"weights: $work/venv/lib/"*"/site-packages/vegediff_cli/weights/vegediff-small.safetensors (shipped;"*"sha256 $sha)"*) ;;
    *) echo "error: the installed vegediff does not use the weights inside the package (sha256 $sha)" >&2; exit 1 ;;
esac
env -u VEGEDIFF_WEIGHTS "$vegediff" forecast --input "$root/sample_data/29SND_2017_sample.nc" \
    --output "$work/out/forecast.nc" --quiet --json > "$work/forecast.json"
for file in out/forecast.nc out/forecast_cogs/forecast.qgs out/forecast_cogs/styles/ndvi_pred.qml; do
    test -s "$file" || { echo "error: the forecast did not write $file" >&2; exit 1; }
done
echo "wheel ok: $(basename "$wheel") ($(du -k "$wheel" | cut -f1) KiB), forecast of the sample with its shipped weights"
