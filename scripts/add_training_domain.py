"""Record `training_domain` in a weights file trained before the trainer wrote it; nothing else changes.

`training_domain` lists, per training sequence, its centre latitude, the first and last forecast-start
dates of its training windows and whether it carried weather (training/index.training_domain, as
`vegediff train` records it); a forecast far from every entry says it lies outside what the weights learned
(model/domain.py). It is computed from the files the weights name (`trained_on`, found under --data).
The tensors and every other metadata key are copied unchanged (the file's SHA-256 changes with its
header).

    python scripts/add_training_domain.py weights/vegediff-small.safetensors
    python scripts/add_training_domain.py runs/loso-34VCL-2021/final.safetensors --print
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from scripts.add_static_coverage import training_sources  # noqa: E402
from scripts.train_weights import SHARED  # noqa: E402
from vegediff_cli.atomic import atomic_file  # noqa: E402
from vegediff_cli.model.domain import KEY, encode_domain  # noqa: E402
from vegediff_cli.training.index import training_domain  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", type=Path)
    parser.add_argument("--output", type=Path, help="file to write (default: replace `weights`)")
    parser.add_argument("--data", type=Path, default=SHARED, help="folder holding the training files")
    parser.add_argument("--print", action="store_true", help="print the domain, write nothing")
    args = parser.parse_args()
    domain = encode_domain(training_domain(training_sources(args.weights, args.data)))
    if args.print:
        print(domain)
        return 0
    with safe_open(str(args.weights), framework="pt") as f:
        metadata = {**(f.metadata() or {}), KEY: domain}
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    output = args.output or args.weights
    with atomic_file(output) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    print(json.dumps({"output": str(output), KEY: json.loads(domain)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
