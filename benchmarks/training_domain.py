"""Which held-out cubes lie inside the training domain of the weights that forecast them.

A forecast warns when its cube lies outside its weights' training domain (model/domain.py: no
conditioned training sequence within 3 degrees of latitude and 30 days of season). For every
leave-one-site-out fold (benchmarks/loso_skill.py) this prints the domain that fold's training
selects (training/index.training_domain over the same files train_weights.py would use, the fold's
site excluded) and, for each cube the fold scores and its validation cube, the check a forecast of
it would make (latitude of the cube's centre, forecast start = the frame after the first 10).
Compare the status with the spread/skill each cube got (weights/MODEL_CARD.md, "Held-out results").

    python benchmarks/training_domain.py            # about 10 s with the index cached
    python benchmarks/training_domain.py --json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.loso_skill import folds  # noqa: E402
from scripts.train_weights import HOLDOUT, INDEX_CACHE, SHARED, VALIDATION  # noqa: E402
from vegediff_cli.config import CONTEXT_FRAMES  # noqa: E402
from vegediff_cli.cube.readers import open_cube  # noqa: E402
from vegediff_cli.cube.schema import centre_latitude  # noqa: E402
from vegediff_cli.model.domain import MAX_DAYS, MAX_DEGREES, check_domain  # noqa: E402
from vegediff_cli.training.index import select_sources, training_domain  # noqa: E402
from vegediff_cli.training.parallel import Runtime  # noqa: E402
from vegediff_cli.training.validation import HELD_OUT_SEASONS  # noqa: E402


def cube_point(cube: Path) -> tuple[float, pd.Timestamp]:
    """(centre latitude, forecast start) of a held-out cube as the benchmarks forecast it."""
    with open_cube(cube) as ds:
        return centre_latitude(ds), pd.Timestamp(ds["time"].values[CONTEXT_FRAMES])


def fold_rows(data: Path) -> list[dict]:
    rows = []
    for fold in folds():
        sources = select_sources([data], [HOLDOUT, VALIDATION, *fold.exclude], runtime=Runtime(), cache=INDEX_CACHE,
                                 held_out_seasons=HELD_OUT_SEASONS)
        domain = training_domain(sources)
        for role, cube in [*(("held out", c) for c in fold.tests), ("validation", fold.validation)]:
            latitude, start = cube_point(cube)
            check = check_domain(domain, latitude=latitude, start=start.date(), conditioned=True)
            rows.append({"fold": fold.name, "role": role, "cube": cube.stem, **check.as_dict(),
                         "domain_sequences": sum(e.conditioned for e in domain)})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [f"limits: {MAX_DEGREES:g} deg of latitude and {MAX_DAYS} days of season", "",
             "| fold | cube (role) | latitude | forecast start | nearest conditioned sequence | deg | days | status |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        nearest = r["nearest"]["name"] if r["nearest"] else "-"
        lines.append(f"| {r['fold']} | {r['cube']} ({r['role']}) | {r['latitude']:.2f} | {r['forecast_start']} | "
                     f"{nearest} | {r['degrees']:.1f} | {r['days']:.0f} | {r['status']} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = fold_rows(args.data)
    print(json.dumps(rows, indent=1) if args.json else markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
