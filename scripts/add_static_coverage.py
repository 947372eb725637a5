"""Record `static_coverage` in a weights file trained before the trainer wrote it, then recalibrate it.

`static_coverage` is the fraction of the denoiser's conditioned training frames whose file held each
static layer (training/index.static_coverage, as `vegediff train` records it); forecasts leave out the
layers below 50 % (pipeline/forecast/model.ignored_static_layers). It is computed from the files the
weights name (`trained_on`, found under --data, each long series cut at its held-out season as in
training). The validation cube is then forecast without those layers, so the spread calibration and the
`validation_*` figures are fitted and scored again as scripts/combine_weights.py does (the test cube is
never read); the tensors are unchanged. With --coverage-only the key is added and nothing else changes
(a training run's final weights, which benchmarks/loso_skill.py calibrates itself).

    python scripts/add_static_coverage.py weights/vegediff-small.safetensors --output weights/vegediff-small.safetensors
    python scripts/add_static_coverage.py runs/loso-34VCL-2021/final.safetensors \
        --output runs/loso-34VCL-2021/final.safetensors --coverage-only
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.combine_weights import REPLACED, validation  # noqa: E402
from scripts.select_weights import (  # noqa: E402
    calibrate,
    calibration_metadata,
    season_validation_cubes,
    validation_cube,
    validation_metadata,
)
from scripts.train_weights import INDEX_CACHE, SHARED  # noqa: E402
from vegediff_cli.model.weights import load_weights, read_metadata, save_weights  # noqa: E402
from vegediff_cli.pipeline.forecast.calibration import ADDED_KEY  # noqa: E402
from vegediff_cli.training.index import SourceInfo, build_index, candidates, static_coverage  # noqa: E402
from vegediff_cli.training.parallel import Runtime  # noqa: E402


def coverage_of(weights: Path, data: Path) -> dict[str, float]:
    """static_coverage of the files `weights` was trained on (its `trained_on`), described as training did."""
    return static_coverage(training_sources(weights, data))


def training_sources(weights: Path, data: Path) -> list[SourceInfo]:
    """The files `weights` was trained on (its `trained_on`, found under `data`), described as training did."""
    meta = read_metadata(weights)
    names = set(json.loads(meta.get("trained_on", "[]")))
    paths = [p for p in candidates([data]) if p.name in names]
    missing = names - {p.name for p in paths}
    if missing:
        raise SystemExit(f"{weights}: training files not found under {data}: {', '.join(sorted(missing))}")
    seasons = json.loads(meta.get("held_out_seasons", "{}"))
    return build_index(paths, cache=INDEX_CACHE, runtime=Runtime(), held_out_seasons=seasons)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", type=Path)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=SHARED, help="folder holding the training files")
    parser.add_argument("--members", type=int, default=16, help="members of the validation and calibration forecasts")
    parser.add_argument("--coverage-only", action="store_true", help="add the key, keep calibration and validation")
    args = parser.parse_args()
    coverage = coverage_of(args.weights, args.data)
    model, meta = load_weights(args.weights)
    if args.coverage_only:
        save_weights(model, args.output, metadata={**meta, "static_coverage": json.dumps(coverage)})
        print(json.dumps({"output": str(args.output), "static_coverage": coverage}))
        return 0
    guidance = float(meta.get("recommended_guidance", 1.0))
    kept = {k: v for k, v in meta.items() if k not in REPLACED and k not in ("format", "config")}
    kept["static_coverage"] = json.dumps(coverage)
    cube = validation_cube()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        raw = save_weights(model, folder / "raw.safetensors", metadata=kept)
        seasons = season_validation_cubes(folder)
        added, per_lead = calibrate(cube, seasons, raw, folder, members=args.members, guidance=guidance)
        calibrated = {**kept, **calibration_metadata(added, per_lead, members=args.members)}
        scored = save_weights(model, folder / "calibrated.safetensors", metadata=calibrated)
        scores = validation(cube, seasons, scored, folder, members=args.members, guidance=guidance)
    final = {**calibrated, **validation_metadata(scores),
             "calibration_note": f"spread_added_variance, spread_calibration and validation_* refitted and scored by "
                                 f"scripts/add_static_coverage.py on {datetime.now(UTC):%Y-%m-%d}, static layers below "
                                 "50 % of static_coverage left out; the tensors and validation_table are unchanged"}
    save_weights(model, args.output, metadata=final)
    print(json.dumps({"output": str(args.output), "static_coverage": coverage, ADDED_KEY: added,
                      "validation": scores}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
