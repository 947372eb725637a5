"""Streaming training data: partial reads, the file index, the seeded window order, the latent cache."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.training_fixtures import TINY_WITH_DATES, training_folder
from vegediff_cli.config import CONTEXT_FRAMES
from vegediff_cli.errors import UsageError
from vegediff_cli.model.inputs import gap_fill
from vegediff_cli.model.vegediff import VegeDiff
from vegediff_cli.training.index import band_statistics, build_index, candidates, describe, meteo_coverage
from vegediff_cli.training.latent_cache import LatentWindows, build_latent_cache
from vegediff_cli.training.order import StepBatches, WindowOrder, split_batch
from vegediff_cli.training.parallel import Runtime
from vegediff_cli.training.sequences import load_frames, load_sequence, minicube_frames
from vegediff_cli.training.windows import dihedral, square

ONE = Runtime()


@pytest.fixture(scope="module")
def folder(shared_data, tmp_path_factory) -> Path:
    return training_folder(shared_data, tmp_path_factory.mktemp("training"))


@pytest.fixture(scope="module")
def sources(folder, tmp_path_factory):
    return build_index(candidates([folder]), cache=tmp_path_factory.mktemp("index") / "index.json", runtime=ONE)


def test_a_window_of_a_minicube_reads_as_the_whole_cube_does(folder):
    """Partial reads (only the days of the asked frames) give the frames of a whole read, meteorology included."""
    path = folder / "mjj_crop.nc"  # starts 2 days late: Sentinel-2 on days 2, 7, ... (phase 2)
    frames, phase = minicube_frames(path)
    whole = load_sequence(path)
    assert phase == 2 and frames == whole.frames.shape[0] == 30
    for start, stop in ((0, 30), (0, 1), (11, 19), (29, 30)):
        part = load_frames(path, start, stop, phase=phase)
        np.testing.assert_array_equal(part.frames, whole.frames[start:stop])
        np.testing.assert_array_equal(part.valid, whole.valid[start:stop])
        np.testing.assert_array_equal(part.meteo, whole.meteo[start:stop])  # 5-day aggregates ending on each frame
        assert list(part.times) == list(whole.times[start:stop]) and part.latitude == whole.latitude


def test_the_index_describes_each_file_once_and_matches_the_arrays(folder, sources, tmp_path):
    by_name = {s.name: s for s in sources}
    assert set(by_name) == {"jas_crop", "mjj_crop", "france_rhone_2017-2019_20m"}
    jas, rhone = by_name["jas_crop"], by_name["france_rhone_2017-2019_20m"]
    assert (jas.frames, jas.side, jas.phase, jas.conditioned) == (30, 64, 4, True)
    assert (rhone.side, rhone.phase, rhone.conditioned, rhone.kind) == (16, None, False, "series")
    seq = load_sequence(folder / "jas_crop.nc")
    _, valid = square(seq, 64)
    assert list(jas.square_clear) == valid.reshape(30, -1).sum(axis=1).tolist()
    future_clear = [valid[s + CONTEXT_FRAMES : s + 30].any() for s in range(20)]
    assert jas.eligible_starts().tolist() == [s for s in range(20) if future_clear[s]]
    # the VAE's band statistics and the weights' meteorology coverage, from the index alone
    sequences = [load_sequence(Path(s.path)) for s in sources]
    clear = [(np.nan_to_num(q.frames[t]), q.valid[t]) for q in sequences for t in range(len(q.frames))
             if q.valid[t].mean() >= 0.3]
    pixels = np.concatenate([f[:, v] for f, v in clear], axis=1).astype(np.float64)
    mean, std = band_statistics(sources)
    np.testing.assert_allclose(mean, pixels.mean(axis=1), atol=1e-5)
    np.testing.assert_allclose(std, pixels.std(axis=1), atol=1e-5)
    present = np.concatenate([np.isfinite(q.meteo).any(axis=2) for q in sequences if q.has_meteo])
    assert list(meteo_coverage(sources).values()) == [round(float(v), 4) for v in present.mean(axis=0)]


def test_the_index_cache_is_reused_and_links_are_read_once(folder, tmp_path, monkeypatch):
    links = tmp_path / "links"
    links.mkdir()
    for i in range(5):
        (links / f"copy{i}.nc").symlink_to(folder / "jas_crop.nc")
    cache = tmp_path / "index.json"
    calls = []

    def counting(path, before=None):
        calls.append(path)
        return describe(path, before)

    monkeypatch.setattr("vegediff_cli.training.index.describe", counting)
    first = build_index(candidates([links]), cache=cache, runtime=ONE)
    assert len(first) == 5 and len(calls) == 1  # five links, one file read
    assert [s.name for s in first] == [f"copy{i}" for i in range(5)]
    assert len(json.loads(cache.read_text())["files"]) == 1
    again = build_index(candidates([links]), cache=cache, runtime=ONE)
    assert len(calls) == 1 and again == first  # read back, not described again


def test_a_held_out_season_is_cut_off_before_anything_reads_it(folder, sources, tmp_path):
    """training/validation.py's held-out seasons: the index, the latent cache and the VAE's frames see
    only the frames before the date, as training_part (the in-memory recipe's cut) keeps them."""
    from vegediff_cli.training.validation import HELD_OUT_SEASONS, training_part

    stem = "france_rhone_2017-2019_20m"
    held = build_index(candidates([folder]), cache=tmp_path / "index.json", runtime=ONE,
                       held_out_seasons=HELD_OUT_SEASONS)
    whole, cut = (next(s for s in group if s.name == stem) for group in (sources, held))
    expected = training_part(load_sequence(folder / f"{stem}.nc"), HELD_OUT_SEASONS)
    assert cut.frames == len(expected.times) < whole.frames and expected.times[-1] < np.datetime64("2019-01-01")
    assert cut.key == whole.key + "|before 2019-01-01"  # its own latent cache entry
    assert cut.square_clear == whole.square_clear[: cut.frames]
    assert cut.band_count < whole.band_count
    read = load_frames(Path(cut.path), 0, cut.frames, phase=cut.phase)  # what the latent cache and the VAE read
    np.testing.assert_array_equal(read.valid, expected.valid)
    assert [s.key for s in held if s.name != stem] == [s.key for s in sources if s.name != stem]
    assert json.loads((tmp_path / "index.json").read_text())["files"].keys() >= {cut.key}


def test_the_window_order_is_a_function_of_the_step(sources):
    order = WindowOrder(sources, batch=8, steps=400, seed=3, series_fraction=0.25)
    again = WindowOrder(sources, batch=8, steps=400, seed=3, series_fraction=0.25)
    assert order.main == 64 and order.others == [16]
    assert [order.batch_of(s) for s in (0, 7, 399)] == [again.batch_of(s) for s in (0, 7, 399)]
    assert order.batch_of(5) != WindowOrder(sources, batch=8, steps=400, seed=4, series_fraction=0.25).batch_of(5)
    sides = Counter(order.side(s) for s in range(400))
    assert 60 < sides[16] < 140  # a quarter of the steps from the other size
    eligible = {(i, int(t)) for i, s in enumerate(sources) for t in s.eligible_starts()}
    for step in range(0, 400, 7):
        side, items = order.batch_of(step)
        assert all(sources[i].side == side and (i, start) in eligible and 0 <= k < 8 for i, start, k in items)


def test_an_epoch_draws_every_window_once(sources):
    order = WindowOrder(sources, batch=4, steps=200, seed=0, series_fraction=0.0, sampling="epoch")
    windows = order.windows(order.main)
    per_epoch = windows // 4
    drawn = [(i, start) for step in range(per_epoch) for i, start, _ in order.batch_of(step)[1]]
    assert len(set(drawn)) == len(drawn) == per_epoch * 4  # no repeats within an epoch
    assert order.position(per_epoch)["epochs"]["64"] == pytest.approx(per_epoch * 4 / windows)
    next_epoch = [(i, start) for step in range(per_epoch, 2 * per_epoch) for i, start, _ in order.batch_of(step)[1]]
    assert drawn != next_epoch  # a new permutation


@pytest.mark.parametrize(("world", "micro"), [(1, 0), (2, 0), (2, 2), (4, 1)])
def test_processes_and_micro_batches_split_the_same_global_batch(sources, world, micro):
    order = WindowOrder(sources, batch=8, steps=10, seed=1, series_fraction=0.5)
    per_process, micro_batches = split_batch(8, micro, world)
    parts = []
    for rank in range(world):
        plan = StepBatches(lambda step: order.batch_of(step)[1], batch=8, micro_batch=micro, first=3, last=5,
                           runtime=Runtime(rank=rank, world=world))
        parts.append(list(plan))
        assert len(parts[-1]) == 2 * micro_batches
    for step_index, step in enumerate((3, 4)):
        joined = [item for rank in range(world)
                  for batch in parts[rank][step_index * micro_batches : (step_index + 1) * micro_batches]
                  for item in batch]
        assert joined == [(*item, step, slot) for slot, item in enumerate(order.batch_of(step)[1])]
    with pytest.raises(UsageError, match="do not split"):
        split_batch(8, 3, 1)


def test_cached_windows_are_the_encoded_frames_of_the_sequence(folder, sources, tmp_path):
    torch.manual_seed(0)
    model = VegeDiff(TINY_WITH_DATES).eval()
    stems = build_latent_cache(model, sources, tmp_path / "latents", runtime=ONE)
    assert len(list((tmp_path / "latents").glob("*.latents.npy"))) == 3
    windows = LatentWindows(tmp_path / "latents", stems, seed=0, train_steps=1000)
    jas = next(i for i, s in enumerate(sources) if s.name == "jas_crop")
    item = windows[(jas, 15, 5, 0, 0)]  # frames 15..29 real, 30..44 past the end
    seq = load_sequence(folder / "jas_crop.nc")
    filled = gap_fill(*square(seq, 64))
    with torch.no_grad():
        expected = model.encode_frames(torch.from_numpy(dihedral(filled[15:30], 5))[None])[0]
    torch.testing.assert_close(item["context"], expected[:10])
    torch.testing.assert_close(item["future"][:5], expected[10:])
    assert not item["future"][5:].any() and not item["weights"][5:].any()  # padded frames teach nothing
    assert item["dates"].shape == (30, 3) and item["static"].shape == (5, 64, 64) and bool(item["conditioned"])
    assert item["noise"].shape == (20, 4, 8, 8) and 0 <= int(item["timestep"]) < 1000
    torch.testing.assert_close(windows[(jas, 15, 5, 0, 0)]["noise"], item["noise"])  # the draws belong to the item
    assert not torch.equal(windows[(jas, 15, 5, 0, 1)]["noise"], item["noise"])
    rhone = next(i for i, s in enumerate(sources) if s.kind == "series")
    small = windows[(rhone, 0, 0, 1, 0)]
    assert small["static"].shape == (5, 16, 16) and not bool(small["conditioned"])
    assert float(small["weights"].sum(dim=(1, 2, 3)).max()) <= 100 / 64 + 1e-6  # 10 x 10 real pixels of 16 x 16
