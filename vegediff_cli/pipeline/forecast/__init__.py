"""`forecast`: the diffusion model over a whole cube, chip by chip, in bounded memory.

Entry (run.py): run_forecasts(ForecastJob, ...). plan.py decides dates, meteorology, chips and blocks;
tiling.py lays out stripes, bands and chips; blocks.py computes a block's chips (chips.py) and blends
them; stream.py, workers.py and distributed.py run blocks here, in worker processes or on a dask
cluster; runtime.py picks processes, threads and compilation; model.py finds and checks the weights;
calibration.py widens the members; outputs.py decides what is up to date and keeps the history.
"""
