"""Train a larger denoiser on a lent GPU from a packed latent cache, then bring it back as a weights file.

The GPU machine (the workplace's `device` tool) gets the working tree only (64 MiB) and has no GDAL
stack (rasterio, rioxarray, pyproj): the raw training files do not travel. Training the denoiser
needs none of them: it reads the VAE latents of the training files (training/latent_cache.py) and
their index entries. So:

    python scripts/train_gpu.py pack                  # here: sources of the shipped recipe -> gpu-pack/
    python scripts/train_gpu.py train --out DIR ...   # on the GPU: one process per seed, EMA weights -> DIR
    python scripts/train_gpu.py unpack DIR            # here: DIR -> runs/base-gpu-seedN/final.safetensors
    python scripts/train_gpu.py pack --exclude MJJ2021_minicube_241_34VCL     # a leave-one-site-out fold
    python scripts/train_gpu.py unpack DIR --name loso-base-gpu-34VCL-2021

`pack` selects the sources exactly as scripts/train_weights.py does (the test cube, the validation
cube and the held-out seasons left out), encodes them with the shipped file's VAE and copies their
latents and index entries to gpu-pack/ (ignored by git; carried to the GPU). `train` builds each
seed's model from the same VAE and a fresh denoiser of `--preset`, trains it with the recipe's
settings (engine.py: bf16 autocast, EMA, cosine schedule) for as many steps as fit before
`--deadline` (timed on the first --probe-steps), and writes the EMA denoiser in fp16, under the
tool's 16 MiB per-file limit. `unpack` joins each with the VAE, in fp32, into weights files
that scripts/select_weights.py and scripts/combine_weights.py take like any run's.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib.util
import json
import logging
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PACK = ROOT / "gpu-pack"
STARTED = time.perf_counter()
GEO_MODULES = ("rasterio", "rioxarray", "pyproj", "netCDF4", "affine", "pystac_client", "odc")


def stub_missing_geo_modules() -> list[str]:
    """Install inert stand-ins for the GDAL stack where it is missing (the GPU image has none), so the
    training modules import; training from latents never calls them (a call raises)."""

    class Absent:
        def __init__(self, *args, **kwargs) -> None:
            pass

        def __getattr__(self, name):
            return Absent()

        def __call__(self, *args, **kwargs):
            raise RuntimeError("the GDAL stack is not installed here (stand-in from scripts/train_gpu.py)")

        def __mro_entries__(self, bases):
            return (object,)

    class Module(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return Absent()

    stubbed = []
    for name in GEO_MODULES:
        try:
            present = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a finder that refuses the name: absent too
            present = False
        if not present:
            stubbed.append(name)
    for name in stubbed:
        for sub in ("", ".crs", ".errors", ".enums", ".warp", ".transform", ".windows", ".io", ".env", ".features"):
            module = Module(name + sub)
            module.__path__ = []  # a package, so submodules import
            sys.modules[name + sub] = module
    return stubbed


def pack(args: argparse.Namespace) -> int:
    from scripts.train_weights import HOLDOUT, INDEX_CACHE, LATENT_CACHE, SHARED, SHIPPED, VALIDATION
    from vegediff_cli.atomic import atomic_file
    from vegediff_cli.training.index import select_sources
    from vegediff_cli.training.latent_cache import build_latent_cache, vae_fingerprint
    from vegediff_cli.training.parallel import Runtime
    from vegediff_cli.training.run import _load_init
    from vegediff_cli.training.validation import HELD_OUT_SEASONS

    runtime = Runtime()
    held_out = [HOLDOUT, VALIDATION, *args.exclude]
    index_cache, latent_cache = (INDEX_CACHE, LATENT_CACHE) if args.cache is None else (
        args.cache / "data-index.json", args.cache / "latent-cache")
    sources = select_sources([SHARED], held_out, runtime=runtime, cache=index_cache, held_out_seasons=HELD_OUT_SEASONS)
    model, _ = _load_init(SHIPPED, runtime.device)
    stems = build_latent_cache(model, sources, latent_cache, runtime=runtime)
    pack_dir = args.pack
    if pack_dir.exists():
        shutil.rmtree(pack_dir)
    (pack_dir / "latents").mkdir(parents=True)
    for stem in stems:
        for suffix in (".latents.npy", ".aux.npz"):
            shutil.copy2(latent_cache / f"{stem}{suffix}", pack_dir / "latents" / f"{stem}{suffix}")
    manifest = {"sources": [dataclasses.asdict(s) for s in sources], "vae": vae_fingerprint(model),
                "vae_from": SHIPPED.name, "held_out": held_out, "held_out_seasons": HELD_OUT_SEASONS}
    with atomic_file(pack_dir / "sources.json") as tmp:
        tmp.write_text(json.dumps(manifest, indent=1))
    size = sum(f.stat().st_size for f in pack_dir.rglob("*") if f.is_file())
    print(f"packed {len(sources)} sources, {size / 2**20:.1f} MiB, in {pack_dir}")
    return 0


def train_one(args: argparse.Namespace) -> int:
    stubbed = stub_missing_geo_modules()
    import torch
    from safetensors.torch import save_file

    from scripts.train_weights import SHIPPED
    from vegediff_cli.model.presets import preset
    from vegediff_cli.training.checkpoint import load_checkpoint
    from vegediff_cli.training.diffusion_train import DiffusionTrainSettings, train_diffusion
    from vegediff_cli.training.index import SourceInfo, _tuples
    from vegediff_cli.training.latent_cache import vae_fingerprint
    from vegediff_cli.training.parallel import Runtime
    from vegediff_cli.training.run import _load_init, with_new_denoiser

    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s seed {args.seed} %(message)s", stream=sys.stderr)
    torch.set_num_threads(2)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    manifest = json.loads((args.pack / "sources.json").read_text())
    sources = [SourceInfo(**{**entry, **_tuples(entry)}) for entry in manifest["sources"]]
    model, _ = _load_init(SHIPPED, device)
    if vae_fingerprint(model) != manifest["vae"]:
        sys.exit("the shipped file's VAE is not the one the pack was encoded with: run `pack` again")
    cfg = preset(args.preset)  # the preset as it stands: train_weights.py's denoiser_config without ablation flags
    torch.manual_seed(args.seed)
    model = with_new_denoiser(model, cfg).to(device)
    settings = DiffusionTrainSettings(steps=args.steps, batch=args.batch, seed=args.seed, workers=args.workers,
                                      series_fraction=0.4, checkpoint_every=500, lr=args.lr, budget_steps=args.probe_steps)
    run_dir = Path(args.run_root) / f"seed{args.seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    fresh = copy.deepcopy(model)
    train_diffusion(model, sources, settings=settings, run_dir=run_dir, runtime=Runtime(device=device),
                    latent_cache=args.pack / "latents")
    # The schedule's length from the probe's pace (start-up included, so on the safe side): as many
    # steps as fit before the deadline, at most --steps; the warm-up steps' rate does not depend on it.
    pace = (time.perf_counter() - began) / args.probe_steps
    steps = int(min(args.steps, args.probe_steps + (args.deadline - (time.perf_counter() - STARTED)) / pace))
    logging.info("probe: %.1f ms per step; training %d steps", 1000 * pace, steps)
    settings = dataclasses.replace(settings, steps=steps, budget_steps=0,
                                   budget_seconds=max(10.0, args.deadline - (time.perf_counter() - STARTED)))
    _, result = train_diffusion(fresh, sources, settings=settings, run_dir=run_dir, runtime=Runtime(device=device),
                                latent_cache=args.pack / "latents")
    state = load_checkpoint(run_dir / "diffusion.ckpt")  # the EMA, also when the deadline stopped the run
    out = Path(args.out)
    # fp16 for the transfer (relative rounding 5e-4; the EMA's values are far inside its range)
    save_file({k: v.half().contiguous().cpu() for k, v in state["ema"].items()},
              str(out / f"{args.preset}-seed{args.seed}.safetensors"))
    summary = {"seed": args.seed, "preset": args.preset, "step": int(state["step"]), "steps": steps,
               "completed": result.completed, "batch": args.batch, "lr": args.lr,
               "seconds": round(time.perf_counter() - began, 1), "windows_per_s": round(result.windows_per_s, 1),
               "final_loss": round(float(sum(result.losses[-100:]) / max(1, len(result.losses[-100:]))), 5),
               "losses_every_100": [round(float(x), 4) for x in result.losses[::100]],
               "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
               "torch": torch.__version__, "stubbed": stubbed, "config": dataclasses.asdict(cfg.vegenet)}
    (out / f"{args.preset}-seed{args.seed}.json").write_text(json.dumps(summary))
    print(json.dumps({k: v for k, v in summary.items() if k not in ("losses_every_100", "config")}), flush=True)
    return 0


def train(args: argparse.Namespace) -> int:
    """One process per seed, side by side on the one GPU."""
    Path(args.out).mkdir(parents=True, exist_ok=True)
    common = ["--preset", args.preset, "--steps", str(args.steps), "--batch", str(args.batch), "--lr", str(args.lr),
              "--workers", str(args.workers), "--deadline", str(args.deadline), "--probe-steps", str(args.probe_steps), "--out", args.out,
              "--run-root", args.run_root, "--pack", str(args.pack)]
    procs = [subprocess.Popen([sys.executable, "-u", __file__, "train-one", "--seed", str(seed), *common])
             for seed in args.seeds]
    return max(p.wait() for p in procs)


def unpack(args: argparse.Namespace) -> int:
    from safetensors.torch import load_file

    from scripts.train_weights import SHIPPED
    from vegediff_cli.model.domain import KEY as DOMAIN_KEY
    from vegediff_cli.model.domain import encode_domain
    from vegediff_cli.model.presets import preset
    from vegediff_cli.model.weights import save_weights
    from vegediff_cli.training.index import SourceInfo, _tuples, meteo_coverage, static_coverage, training_domain
    from vegediff_cli.training.run import _load_init, with_new_denoiser

    folder = Path(args.folder)
    base, _ = _load_init(SHIPPED, "cpu")  # the VAE of every seed (with_new_denoiser copies it)
    manifest = json.loads((args.pack / "sources.json").read_text())
    sources = [SourceInfo(**{**entry, **_tuples(entry)}) for entry in manifest["sources"]]
    for summary_file in sorted(folder.glob("*-seed*.json")):
        summary = json.loads(summary_file.read_text())
        state = {k: v.float() for k, v in load_file(str(summary_file.with_suffix(".safetensors"))).items()}
        model = with_new_denoiser(base, preset(summary["preset"]))
        model.vegenet.load_state_dict(state)
        metadata = {"stage": "vae+diffusion", "trained_on": json.dumps([Path(s["path"]).name
                                                                       for s in manifest["sources"]]),
                    "held_out": json.dumps(manifest["held_out"]),
                    "held_out_seasons": json.dumps(manifest["held_out_seasons"]),
                    "final_loss": str(summary["final_loss"]), "gpu_training": json.dumps(summary),
                    "diffusion_settings": json.dumps({k: summary[k] for k in ("seed", "steps", "batch", "lr")}),
                    "meteo_coverage": json.dumps(meteo_coverage(sources))}
        if all("static_layers" in entry for entry in manifest["sources"]):  # packs made before it lack the field
            metadata["static_coverage"] = json.dumps(static_coverage(sources))
        if all("latitude" in entry for entry in manifest["sources"]):  # packs made before it lack the field
            metadata[DOMAIN_KEY] = encode_domain(training_domain(sources))
        name = args.name or f"{summary['preset']}-gpu"
        output = args.runs / f"{name}-seed{summary['seed']}" / "final.safetensors"
        output.parent.mkdir(parents=True, exist_ok=True)
        save_weights(model.eval(), output, metadata=metadata)
        print(f"{output}: step {summary['step']} of {summary['steps']}, loss {summary['final_loss']}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--exclude", action="append", default=[])
    p.add_argument("--cache", type=Path, default=None,
                   help="folder of the index and latent caches (default: runs/, shared with train_weights.py)")
    for name in ("train", "train-one"):
        p = sub.add_parser(name)
        p.add_argument("--preset", default="base")
        p.add_argument("--steps", type=int, default=6000)
        p.add_argument("--batch", type=int, default=16)
        p.add_argument("--lr", type=float, default=3e-4)
        p.add_argument("--workers", type=int, default=4)
        p.add_argument("--probe-steps", type=int, default=200, help="steps timed to set the schedule's length")
        p.add_argument("--deadline", type=float, default=420.0, help="seconds from start by which training ends")
        p.add_argument("--out", required=True)
        p.add_argument("--run-root", default="/tmp/vegediff-gpu-runs")
        if name == "train":
            p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
        else:
            p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("unpack")
    p.add_argument("folder")
    p.add_argument("--name", default=None, help="run folders RUNS/NAME-seedN (default: PRESET-gpu)")
    p.add_argument("--runs", type=Path, default=ROOT / "runs")
    for p in sub.choices.values():
        p.add_argument("--pack", type=Path, default=PACK, help="the pack folder (default: gpu-pack/)")
    args = parser.parse_args()
    return {"pack": pack, "train": train, "train-one": train_one, "unpack": unpack}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
