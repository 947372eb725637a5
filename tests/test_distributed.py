"""Blocks on a Dask cluster (two worker processes on loopback) give the single-process forecast, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from tests.forecast_fixtures import synthetic_cube, write_weights
from vegediff_cli.config import SamplerSettings
from vegediff_cli.pipeline.forecast.plan import ForecastSettings
from vegediff_cli.pipeline.forecast.run import ForecastJob, run_forecasts

distributed = pytest.importorskip("distributed")


@pytest.mark.slow
def test_local_cluster_matches_single_process(tmp_path):
    weights = write_weights(tmp_path / "tiny.safetensors")
    cubes = [synthetic_cube(tmp_path / "a.nc", height=128, width=192, frames=11, seed=1),
             synthetic_cube(tmp_path / "b.nc", height=128, width=128, frames=11, seed=2)]
    # two stripes for cube a, two bands each: blocks of both jobs interleave on the workers
    settings = ForecastSettings(horizon=2, members=2, sampler=SamplerSettings(steps=1), stripe_cols=128,
                                band_rows=64, batch_size=1, seed=11)
    # the workers run one torch thread each; so must the local run, for bit-equal float reductions
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = run_forecasts([ForecastJob(c, tmp_path / f"{c.stem}_local.nc") for c in cubes], weights=weights,
                              settings=settings, device="cpu")
    finally:
        torch.set_num_threads(threads)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, env={"OMP_NUM_THREADS": "1"}) as cluster:
        remote = run_forecasts([ForecastJob(c, tmp_path / f"{c.stem}_dask.nc") for c in cubes], weights=weights,
                               settings=settings, device="cpu", scheduler=cluster.scheduler_address)
        workers = cluster.scheduler_info["workers"]
        assert len(workers) == 2
    assert [s.chips for s in remote] == [s.chips for s in local]
    for cube in cubes:
        with xr.open_dataset(tmp_path / f"{cube.stem}_local.nc") as a, xr.open_dataset(tmp_path / f"{cube.stem}_dask.nc") as b:
            for name in ("ndvi_pred", "ndvi_member", "s2_B8A_pred", "context_clear_count"):
                np.testing.assert_array_equal(b[name].values, a[name].values, err_msg=name)
            assert np.isfinite(a["ndvi_pred"].values).any()
