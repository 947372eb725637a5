"""benchmarks/loso_skill.py: a fold repeats its recipe run's settings with its own site excluded too."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402

from benchmarks import loso_skill  # noqa: E402
from benchmarks.loso_skill import folds, own_seeds, train_command  # noqa: E402


def test_a_fold_repeats_the_recipe_run_and_excludes_its_site(tmp_path):
    recipe = tmp_path / "runs" / "no-32UQC"
    recipe.mkdir(parents=True)
    (recipe / "recipe.json").write_text(json.dumps({"steps": 1500, "seed": 3, "batch": 8, "series_fraction": 0.4,
                                                    "train_mix": "preset", "preset": "small", "no_dates": True,
                                                    "cond_dropout": 0.3, "meteorology": "context_anomaly",
                                                    "meteo_dropout": 0.2,
                                                    "exclude": ["32UQC_2020"]}))
    by_name = {f.name: f for f in folds()}
    fold = by_name["29SQC-2017"]
    assert fold.run_dir(recipe) == tmp_path / "runs" / "loso-no-32UQC-29SQC-2017"
    assert by_name["29SND-2021"].run_dir(recipe) == recipe  # the recipe run holds that cube out itself
    assert fold.run_dir(tmp_path / "runs" / "shipped") == tmp_path / "runs" / "loso-29SQC-2017"

    command = train_command(fold, recipe, None)
    assert command[command.index("--name") + 1] == "loso-no-32UQC-29SQC-2017"
    assert command[command.index("--steps") + 1] == "1500" and command[command.index("--seed") + 1] == "3"
    assert "--no-dates" in command and command[command.index("--cond-dropout") + 1] == "0.3"
    assert command[command.index("--meteorology") + 1] == "context_anomaly"
    assert command[command.index("--meteo-dropout") + 1] == "0.2"
    excluded = [command[i + 1] for i, part in enumerate(command) if part == "--exclude"]
    assert excluded == ["32UQC_2020", "context_29SQC_2017"]
    shorter = train_command(fold, recipe, 200)
    assert shorter[shorter.index("--steps") + 1] == "200"


def test_a_training_seed_names_its_own_run_folders_and_reaches_the_trainer(tmp_path):
    recipe = tmp_path / "runs" / "shipped"
    recipe.mkdir(parents=True)
    (recipe / "recipe.json").write_text(json.dumps({"steps": 3000, "seed": 0}))
    by_name = {f.name: f for f in folds()}
    fold = by_name["29SQC-2017"]
    assert fold.run_dir(recipe, 2) == tmp_path / "runs" / "loso-29SQC-2017-seed2"
    assert by_name["29SND-2021"].run_dir(recipe, 2) == tmp_path / "runs" / "shipped-seed2"

    command = train_command(fold, recipe, None, 2)
    assert command[command.index("--name") + 1] == "loso-29SQC-2017-seed2"
    assert command[command.index("--seed") + 1] == "2"
    recipe_seed = train_command(fold, recipe, None)
    assert recipe_seed[recipe_seed.index("--seed") + 1] == "0"
    own = train_command(by_name["29SND-2021"], recipe, None, 2)
    assert own[own.index("--name") + 1] == "shipped-seed2" and "--exclude" not in own


def test_combined_seeds_name_the_recipe_run_and_the_seed_runs(tmp_path):
    """--combine-seeds 0 1 2 with a recipe of seed 0: the fold's own run and its -seed1, -seed2 runs."""
    recipe = tmp_path / "runs" / "shipped"
    recipe.mkdir(parents=True)
    (recipe / "recipe.json").write_text(json.dumps({"steps": 3000, "seed": 0}))
    fold = {f.name: f for f in folds()}["29SQC-2017"]
    seeds = own_seeds(recipe, [0, 1, 2])
    assert seeds == [None, 1, 2]
    assert [fold.run_dir(recipe, s).name for s in seeds] == ["loso-29SQC-2017", "loso-29SQC-2017-seed1",
                                                             "loso-29SQC-2017-seed2"]
    assert own_seeds(recipe, [None]) == [None]


def test_a_recipe_run_without_its_recipe_is_refused_unless_it_is_the_shipped_default(tmp_path, monkeypatch):
    """A run still training under the old script had no recipe.json; its folds would have trained the
    defaults (the shipped recipe) under its name. Only the default runs/shipped may lack one."""
    unknown = tmp_path / "runs" / "no-mix"
    unknown.mkdir(parents=True)
    with pytest.raises(SystemExit, match="no recipe.json"):
        own_seeds(unknown, [0, 1])
    with pytest.raises(SystemExit, match="no recipe.json"):
        train_command(folds()[0], unknown, None)
    monkeypatch.setattr(loso_skill, "DEFAULT_RECIPE", tmp_path / "runs" / "shipped")
    assert own_seeds(tmp_path / "runs" / "shipped", [0, 3]) == [None, 3]


def test_the_clear_pixel_rule_scores_every_pixel_a_forecast_and_persistence_both_cover():
    import numpy as np

    from benchmarks.heldout_skill import PIXEL_RULES
    from vegediff_cli.metrics.deterministic import high_quality

    context = np.full((10, 1, 4), np.nan)
    target = np.full((20, 1, 4), np.nan)
    context[9, 0, :3] = 0.6  # pixels 0-2 have a clear context frame (the forecast's min_clear_context 1)
    target[4, 0, [0, 3]] = -0.2  # pixels 0 and 3 one clear target observation (water-like NDVI, no land cover)
    target[:, 0, 1] = 0.7  # pixel 1 every target date, flat
    # pixel 2: no target observation; pixel 3: no clear context, so no forecast and no persistence
    assert high_quality(target, context, None, rule=PIXEL_RULES["clear"]).tolist() == [[True, True, False, False]]
    assert not high_quality(target, context, None, rule=PIXEL_RULES["greenearthnet"]).any()


def test_the_training_script_applies_the_weather_dropout_and_refuses_impossible_shares():
    from argparse import Namespace

    from scripts.train_weights import denoiser_config

    def args(**changes):
        return Namespace(**{"preset": "tiny", "no_dates": False, "meteorology": None, "train_mix": "preset",
                            "cond_dropout": None, "meteo_dropout": None, **changes})

    assert denoiser_config(args()).diffusion.meteo_dropout == 0.0  # the preset's: never
    cfg = denoiser_config(args(meteo_dropout=0.2, meteorology="absolute_and_anomaly"))
    assert cfg.diffusion.meteo_dropout == 0.2 and cfg.vegenet.meteo_inputs == 48
    for bad in (dict(meteo_dropout=-0.1), dict(meteo_dropout=0.95), dict(cond_dropout=0.6, meteo_dropout=0.5)):
        with pytest.raises(SystemExit, match="together at most 1"):
            denoiser_config(args(**bad))
