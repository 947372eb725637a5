"""`forecast`: a prepared cube of any size -> forecast.nc (+ one NDVI COG per step), streamed block by block.

    from vegediff_cli.pipeline.forecast.run import ForecastJob, run_forecasts
    from vegediff_cli.pipeline.forecast.plan import ForecastSettings

    [summary] = run_forecasts([ForecastJob(cube=Path("cube.nc"), output=Path("forecast.nc"), cogs=None)],
                              weights=None, settings=ForecastSettings(members=8))

Layers: plan.py decides dates, meteorology, chips and blocks; blocks.py computes
one block; this module drives the blocks (here, or on a Dask cluster: distributed.py) and writes
the results as they arrive (cube/netcdf_stream.py). docs/forecast.md describes the whole step.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import xarray as xr

from ... import __version__
from ...atomic import output_lock
from ...config import BANDS, CHIP_SIZE
from ...cube import provenance
from ...cube.cog import export_cogs
from ...cube.netcdf_stream import (
    GridWriter,
    VariableSpec,
    float_var,
    grid_writer,
    open_grid,
    packed_var,
    small_chunk_cache,
)
from ...cube.readers import open_cube
from ...cube.schema import BAND_LONG_NAMES
from ...cube.validate import check_reflectance
from ...errors import UsageError
from ...geo import chip_layout
from ...model.device import pick_device, resolve_precision
from ...model.domain import DomainCheck, check_domain
from ...model.presets import ModelConfig
from ...model.vegediff import resolve_context_mix
from ...model.weights import file_digest
from ...progress import ProgressFactory, no_progress
from ...qgis.folder import run_title, write_folder_project
from ...resources import check_forecast_memory, forecast_memory, release_freed_memory
from ...workdir import TileFiles
from ..observed import write_context_cogs
from .blocks import BlockResult, call_layout, chip_settings, default_rows, layout_for
from .model import (
    ignored_meteo_variables,
    ignored_static_layers,
    model_config,
    resolve_weights,
    spread_calibration,
    training_domain,
)
from .outputs import (
    DEFAULT_KEEP_HISTORY,
    check_cube_is_fresh,
    default_cogs_folder,
    existing_summary,
    forecast_record,
    remove_stale_cogs,
    retire_previous,
)
from .plan import (
    ForecastPlan,
    ForecastSettings,
    bytes_per_pixel,
    calls_in_flight_bytes,
    check_settings,
    plan_forecast,
)
from .runtime import check_runtime_options, choose_runtime, usable_cores
from .stream import stream_blocks
from .tiling import ALIGN, stripe_width
from .workers import local_runner, peak_rss_mib

log = logging.getLogger("vegediff.forecast")
PRED, MEMBER, CLEAR_COUNT, LAST_CLEAR = "ndvi_pred", "ndvi_member", "context_clear_count", "ndvi_last_clear"
# zlib level of forecast.nc: level 1 writes 22 % faster than 4 for 2 % more bytes (2048^2 px, 20 steps)
COMPLEVEL = 1


def band_pred(band: str) -> str:
    return f"{band}_pred"


@dataclass(frozen=True)
class ForecastJob:
    """One forecast: a cube in, a forecast.nc (and optionally a folder of COGs) out."""

    cube: Path  # prepared cube, GreenEarthNet / EarthNet2021x minicube or EarthNet2021 sample
    output: Path  # forecast.nc to write
    cogs: Path | None = None  # folder for one NDVI COG per step; None: no COGs
    weather: str | Path | None = None  # --weather: a NetCDF file, or auto / open-meteo / scenarios / none (pipeline/meteo/weather.py)
    tile: TileFiles | None = None  # the tile folder when the job works in a working directory (--tile)


@dataclass
class ForecastSummary:
    output: Path
    cogs: Path | None
    dates: list[str]
    members: int
    meteo_source: str
    chips: int  # chip forecasts computed (stripe-border chips count twice)
    chips_in_layout: int
    seconds: float
    attrs: dict = field(default_factory=dict)
    up_to_date: bool = False  # the existing output was made from the same inputs and settings: kept
    runtime: dict = field(default_factory=dict)  # Runtime.as_dict() (processes, threads, compiled) and peak memory

    def as_dict(self) -> dict:
        return {
            "output": str(self.output), "cogs": str(self.cogs) if self.cogs else None, "up_to_date": self.up_to_date,
            "dates": self.dates,
            "members": self.members, "meteo_source": self.meteo_source, "chips_computed": self.chips,
            "chips_in_layout": self.chips_in_layout, "seconds": round(self.seconds, 2),
            "precision": self.attrs.get("precision"),
            "meteo_source_per_step": self.attrs.get("meteo_source_per_step", "").split(),
            "weather_per_member_step": self.weather_per_member_step(),
            "training_domain": {"status": self.attrs.get("training_domain", "unknown"),
                                "note": self.attrs.get("training_domain_note", "")},
            "runtime": self.runtime,
        }

    def weather_per_member_step(self) -> list[list[str]] | None:
        """(members, steps) the weather each member used at each step; None without scenarios."""
        members = [m for m in str(self.attrs.get("weather_per_member", "")).split("|") if m]
        if not members:
            return None
        steps = str(self.attrs.get("meteo_source_per_step", "")).split()
        return [[label if step == "scenario" else step for step in steps] for label in members]


def output_variables(members: int) -> list[VariableSpec]:
    """forecast.nc's variables (docs/cube-format.md)."""
    grid = ("time", "y", "x")
    specs = [float_var(PRED, grid, "ensemble-mean NDVI forecast")]
    specs += [packed_var(band_pred(b), grid, f"predicted {BAND_LONG_NAMES[b][0].lower()}{BAND_LONG_NAMES[b][1:]} "
                                              "(ensemble mean)") for b in BANDS]
    if members > 1:
        specs.append(packed_var(MEMBER, ("member", *grid), "NDVI forecast of each ensemble member"))
    specs.append(VariableSpec(CLEAR_COUNT, ("y", "x"), {"long_name": "clear context frames", "units": "1"}, dtype="u1"))
    specs.append(float_var(LAST_CLEAR, ("y", "x"), "NDVI of the last clear context frame (reference for drops)"))
    return specs


def output_attrs(job: ForecastJob, plan: ForecastPlan, *, weights: Path, cfg: ModelConfig,
                 domain: DomainCheck) -> dict:
    s, times = plan.settings, plan.times
    return {
        "Conventions": "CF-1.8",
        "title": "vegediff NDVI and reflectance forecast",
        "source": "forecast",
        "vegediff_version": __version__,
        "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "input": job.cube.name,
        "weights": weights.name,
        "weights_sha256": file_digest(weights),
        "model": cfg.name,
        "denoisers": cfg.denoisers,  # model/ensemble.py: member m was drawn by denoiser m mod denoisers
        "meteorology": cfg.vegenet.meteorology,  # how the weights read the weather (model/presets.py)
        "sampler": s.sampler.sampler,
        "steps": s.sampler.steps,
        "guidance_scale": s.sampler.guidance_scale if plan.conditioned else 1.0,
        "context_mix": resolve_context_mix(s.sampler, cfg),
        "precision": s.precision,  # resolved (fp32/bf16) for local runs; "auto" on a cluster: each worker's device decides
        "seed": s.seed,
        "members": s.members,
        "horizon": s.horizon,
        "overlap": s.overlap,
        "detail_transfer": s.detail_transfer,
        "min_clear_context": s.min_clear_context,
        "conditioned": plan.conditioned,
        "static_layers": " ".join(plan.static_layers) if plan.conditioned else "",
        "static_ignored": " ".join(plan.static_ignored) if plan.conditioned else "",  # layers the weights hardly saw
        "meteo_source": plan.meteo.source,
        "meteo_source_per_step": " ".join(plan.meteo.per_step),
        "meteo_ignored": " ".join(plan.meteo.ignored),  # variables the weights hardly saw: left at the E-OBS mean
        "spread_calibration": plan.spread_calibration.describe() if plan.spread_calibration else "none",
        # Weather scenarios: member m used weather_per_member[m] at the steps marked "scenario" above.
        "weather_per_member": "|".join(plan.meteo.scenario_labels[m % len(plan.meteo.scenario_labels)]
                                       for m in range(s.members)) if plan.meteo.per_member else "",
        "meteo_attribution": plan.meteo.attribution,
        "forecast_start": f"{times.dates[0]:%Y-%m-%d}",
        "context_dates": " ".join(f"{d:%Y-%m-%d}" for d in times.context_dates),
        "training_domain": domain.status,  # inside / outside / unknown (model/domain.py)
        "training_domain_note": domain.describe(),
    }


def outside_warning(check: DomainCheck) -> str:
    """The one line a forecast outside its weights' training domain logs."""
    return (f"forecast starting {check.start:%Y-%m-%d} at {check.latitude:.1f} deg N lies outside the weights' "
            f"training domain ({check.describe()}); on held-out sites outside it the members were too narrow "
            "(spread/skill 0.44-0.59): read quantiles and exceedance probabilities as overconfident "
            "(weights/MODEL_CARD.md, 'Training domain')")


def write_block(writer: GridWriter, result: BlockResult) -> None:
    block = result.block
    rows, cols = slice(block.row0, block.row1), slice(block.col0, block.col1)
    writer.write(PRED, rows, cols, result.ndvi_pred)
    for i, band in enumerate(BANDS):
        writer.write(band_pred(band), rows, cols, result.bands[:, i])
    if result.ndvi_member.shape[0] > 1:
        writer.write(MEMBER, rows, cols, result.ndvi_member)
    writer.write(CLEAR_COUNT, rows, cols, result.clear_count)
    writer.write(LAST_CLEAR, rows, cols, result.last_clear_ndvi)


@dataclass
class _Prepared:
    job: ForecastJob
    cube: xr.Dataset  # opened once (lazily for vegediff cubes) and closed when the run ends
    plan: ForecastPlan
    attrs: dict


def check_memory(cube: xr.Dataset, cfg, settings: ForecastSettings, *, device_type: str) -> None:
    """Refuse a forecast whose members, batch or model cannot fit --memory-mb and the free memory,
    before the model is built or any block allocated (vegediff_cli/resources.py)."""
    check_settings(settings, cfg)  # the values themselves first (--members 0 ...)
    width, height = int(cube.sizes["x"]), int(cube.sizes["y"])
    per_pixel = bytes_per_pixel(settings.members, settings.horizon, cfg.vegenet.context_frames)
    overlap = settings.overlap if 0 <= settings.overlap < CHIP_SIZE // 2 else 0  # checked with the plan
    chips = len(chip_layout(max(height, CHIP_SIZE), max(width, CHIP_SIZE), overlap=overlap))
    stripe = settings.stripe_cols or stripe_width(width, bytes_per_pixel=per_pixel, band_rows=settings.band_rows,
                                                  budget_bytes=settings.memory_mb * 2**20)
    layout = layout_for(settings.members, settings.batch_size, rows_per_call=default_rows(device_type))
    estimate = forecast_memory(cfg, members=layout.member_chunk, chips_per_call=min(chips, layout.chips_per_call),
                               width=width, stripe=stripe, band_rows=settings.band_rows, bytes_per_pixel=per_pixel,
                               align=ALIGN)
    check_forecast_memory(estimate, members=settings.members, memory_mb=settings.memory_mb)


@contextlib.contextmanager
def _prepare(jobs: list[ForecastJob], weights: Path, settings: ForecastSettings, workers: int,
             device_type: str = "cpu", reserved_bytes: float = 0.0) -> Iterator[list[_Prepared]]:
    """Open every cube and plan every job first: bad input fails before any long computation."""
    cfg = model_config(weights)
    ignore_meteo, ignore_static = ignored_meteo_variables(weights), ignored_static_layers(weights)
    domain = training_domain(weights)
    outputs = [job.output.resolve() for job in jobs]
    if len(set(outputs)) < len(outputs):
        raise UsageError("two forecasts would write the same output file", fix="give each input its own `output`")
    with contextlib.ExitStack() as stack:
        prepared = []
        for job in jobs:
            cube = stack.enter_context(contextlib.closing(open_cube(job.cube)))
            check_memory(cube, cfg, settings, device_type=device_type)
            plan = plan_forecast(cube, cfg, settings, weather=job.weather, workers=workers, ignore_meteo=ignore_meteo,
                                 ignore_static=ignore_static, reserved_bytes=reserved_bytes,
                                 spread_calibration=spread_calibration(weights, settings.horizon))
            check_reflectance(cube, source=str(job.cube), frames=plan.times.context_index, what="the context frames")
            if plan.static_ignored and plan.conditioned:
                log.info("static layers: %s left out (the weights were hardly trained with them)",
                         " ".join(plan.static_ignored))
            log.info("%s: %d chips (%d with vegetation and clear context) in %d stripe(s) x %d band(s); meteorology: %s",
                     job.cube.name, len(plan.tiles.chips), len(plan.active), len(plan.tiles.stripes),
                     len(plan.tiles.bands), plan.meteo.source)
            check = check_domain(domain, latitude=plan.latitude, start=plan.times.dates[0].date(),
                                 conditioned=plan.conditioned)
            if check.inside is False:
                log.warning("%s: %s", job.cube.name, outside_warning(check))
            prepared.append(_Prepared(job, cube, plan, output_attrs(job, plan, weights=weights, cfg=cfg, domain=check)))
        yield prepared


@contextlib.contextmanager
def _writers(prepared: list[_Prepared]) -> Iterator[list[GridWriter]]:
    """One open writer per job; each file appears when its writer closes without error."""
    with contextlib.ExitStack() as stack:
        writers = []
        for item in prepared:
            coords = {"time": item.plan.times.dates}
            if item.plan.settings.members > 1:
                coords["member"] = list(range(item.plan.settings.members))
            writers.append(stack.enter_context(grid_writer(
                item.job.output, like=item.cube, variables=output_variables(item.plan.settings.members),
                coords=coords, attrs=item.attrs, complevel=COMPLEVEL)))
        yield writers


def _workload(prepared: list[_Prepared], layout_of) -> tuple[int, int, int]:
    """(chips to compute, chip-members, model calls) over every job."""
    chips = calls = chip_members = 0
    for item in prepared:
        layout, members = layout_of(item.plan), item.plan.settings.members
        for block in item.plan.tiles.all_blocks():
            active = len(item.plan.active_chips(block))
            chips += active
            chip_members += active * members
            calls += layout.calls(active, members)
    return chips, chip_members, calls


def run_forecasts(
    jobs: list[ForecastJob],
    *,
    weights: str | Path | None = None,
    settings: ForecastSettings = ForecastSettings(),
    device: str = "auto",
    scheduler: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
    compile: str = "auto",
    progress: ProgressFactory = no_progress,
    force: bool = False,
    keep_history: int = DEFAULT_KEEP_HISTORY,
) -> list[ForecastSummary]:
    """Forecast every job; with `scheduler` (a Dask address or "local") the blocks run on a cluster.

    A job whose output is up to date (same inputs and settings, pipeline/forecast/outputs.py) is
    skipped unless `force`; every output is locked against concurrent runs while it is written.
    `workers` (model processes; 0: this process), `threads` (torch threads per process) and `compile`
    (auto, on, off) default to pipeline/forecast/runtime.py's policy; the choice is recorded in the
    output's attributes and the summary.
    """
    if not jobs:
        raise UsageError("nothing to forecast", fix="pass `tile` TILE or `input` CUBE")
    check_runtime_options(workers=workers, threads=threads, compile=compile)
    began = time.perf_counter()
    outputs = [job.output.resolve() for job in jobs]
    if len(set(outputs)) < len(outputs):
        raise UsageError("two forecasts would write the same output file", fix="give each input its own `output`")
    weights_path = resolve_weights(weights)
    torch_device = pick_device(device) if scheduler is None else None
    if torch_device is not None:
        settings = replace(settings, precision=resolve_precision(settings.precision, torch_device))
    with contextlib.ExitStack() as locks:
        for job in jobs:
            locks.enter_context(output_lock(job.output, *([job.cogs] if job.cogs else []), what="forecast"))
        records, done, todo = [], {}, []
        for index, job in enumerate(jobs):
            if job.tile is not None:
                check_cube_is_fresh(job.tile, job.cube)
            records.append(forecast_record(job.cube, weights_path, job.weather, settings))
            if not force and provenance.up_to_date(job.output, records[index], cogs=job.cogs):
                log.info("%s is up to date (same cube, weights and settings); `force` redoes it", job.output)
                known = existing_summary(job.output)
                done[index] = ForecastSummary(job.output, job.cogs, known["dates"], known["members"],
                                              known["meteo_source"], 0, 0, time.perf_counter() - began,
                                              known["attrs"], up_to_date=True)
            else:
                todo.append(index)
        if todo:
            ran = _run([jobs[i] for i in todo], [records[i] for i in todo], weights_path, settings, torch_device,
                       device, scheduler, workers, progress, keep_history, began, threads=threads, compile=compile)
            done.update(zip(todo, ran, strict=True))
        return [done[i] for i in range(len(jobs))]


def _run(jobs: list[ForecastJob], records: list[dict], weights_path: Path, settings: ForecastSettings,
         torch_device, device: str, scheduler: str | None, workers: int | None, progress: ProgressFactory, keep_history: int,
         began: float, *, threads: int | None = None, compile: str = "auto") -> list[ForecastSummary]:
    with contextlib.ExitStack() as stack:
        stack.enter_context(small_chunk_cache())
        if scheduler is None:
            rows = default_rows(torch_device.type)
            prepared = stack.enter_context(_prepare(jobs, weights_path, settings, 1, torch_device.type,
                                                    _calls_reserve(weights_path, settings, rows, workers)))
            total, chip_members, calls = _workload(prepared, lambda plan: call_layout(plan, rows_per_call=rows))
            first = prepared[0].plan
            layout = call_layout(first, rows_per_call=rows)
            probe = (layout, chip_settings(first, precision=settings.precision, device_type=torch_device.type,
                                           compiled=False, layout=layout), first.conditioned)
            runtime, runner = stack.enter_context(local_runner(
                weights=weights_path, device=torch_device, precision=settings.precision, units=calls,
                chip_members=chip_members, rows_per_call=rows, probe=probe, workers=workers, threads=threads,
                compile=compile, memory_mb=settings.memory_mb))
        else:
            from .distributed import cluster_client, run_blocks

            client = stack.enter_context(cluster_client(scheduler, workers=workers))
            n_workers = max(1, len(client.scheduler_info(n_workers=-1).get("workers", {})))
            prepared = stack.enter_context(_prepare(jobs, weights_path, settings, n_workers))
            device_type = "cuda" if device.startswith("cuda") else "cpu"
            rows = default_rows(device_type)
            total, chip_members, calls = _workload(prepared, lambda plan: call_layout(plan, rows_per_call=rows))
            runtime = choose_runtime(units=calls, chip_members=chip_members, device_type=device_type,
                                     workers=n_workers, threads=1, compile=compile, rows_per_call=rows,
                                     denoisers=min(model_config(weights_path).denoisers, settings.members))
        log.info("runtime: %s", runtime.reason)
        for item, made in zip(prepared, records, strict=True):
            item.attrs.update(provenance.product_attrs(made))
            item.attrs.update(runtime.attrs())
        computed = [0] * len(prepared)
        bar = stack.enter_context(progress(total, "forecast chips"))
        writers = stack.enter_context(_writers(prepared))
        stack.enter_context(_on_success(lambda: _retire(prepared, keep_history)))  # runs before the renames
        if scheduler is None:
            for index, item in enumerate(prepared):
                layout = call_layout(item.plan, rows_per_call=rows)
                chip_settings_ = chip_settings(item.plan, precision=settings.precision, device_type=torch_device.type,
                                               compiled=runtime.compiled, layout=layout)
                for result in stream_blocks(item.cube, item.plan, runner, layout=layout, settings=chip_settings_,
                                            on_chips=bar.update):
                    write_block(writers[index], result)
                    computed[index] += result.chips
                    # Trim once the block's own arrays are gone: trimming inside write_block, with them still
                    # alive, left the main process at 2002 MiB over a full tile instead of 1600.
                    del result
                    release_freed_memory()
            worker_peaks = runner.peak_rss_mib()
        else:
            worker_peaks = []  # on the cluster's machines
            tasks = [(str(p.job.cube), p.plan) for p in prepared]
            for index, result in run_blocks(client, tasks, weights=str(weights_path), device=device,
                                            compiled=runtime.compiled):
                write_block(writers[index], result)
                computed[index] += result.chips
                bar.update(result.chips)
    memory = {"main_peak_rss_mib": peak_rss_mib(), "worker_peak_rss_mib": worker_peaks,
              "memory_mb": settings.memory_mb}
    summaries = []
    for index, item in enumerate(prepared):
        job = item.job
        if job.cogs is not None:
            write_forecast_cogs(job.output, job.cogs, cube=job.cube)
            provenance.write_cog_marker(job.cogs, job.output, item.attrs)
        in_tile = job.tile is not None and job.output == job.tile.forecast
        stale = job.tile.forecast_cogs if in_tile else default_cogs_folder(job.output)
        if stale != job.cogs:
            remove_stale_cogs(stale, job.output)
        summaries.append(ForecastSummary(
            job.output, job.cogs, [f"{d:%Y-%m-%d}" for d in item.plan.times.dates],
            item.plan.settings.members, item.plan.meteo.source, computed[index], len(item.plan.tiles.chips),
            time.perf_counter() - began, item.attrs, runtime={**runtime.as_dict(), **memory}))
    return summaries


def _calls_reserve(weights: Path, settings: ForecastSettings, rows: int, workers: int | None) -> float:
    """Bytes of the memory budget kept for model calls under way: in this process, or queued for the
    workers the runtime may start (one per usable core, plus one queued)."""
    cfg = model_config(weights).vegenet
    processes = workers if workers is not None else (usable_cores() if usable_cores() > 1 else 0)
    return calls_in_flight_bytes(rows_per_call=rows, calls=processes + 1 if processes else 1,
                                 context_frames=cfg.context_frames, horizon=cfg.horizon, pickled=processes > 0)


@contextlib.contextmanager
def _on_success(action) -> Iterator[None]:
    """Run `action` when the block ends without an exception."""
    yield
    action()


def _retire(prepared: list[_Prepared], keep_history: int) -> None:
    """Tile jobs: move the previous forecast's products aside just before the new files replace it."""
    for item in prepared:
        if item.job.tile is not None and item.job.output == item.job.tile.forecast:
            retire_previous(item.job.tile, new_start=f"{item.plan.times.dates[0]:%Y-%m-%d}", keep=keep_history)


def write_forecast_cogs(forecast: Path, folder: Path, *, cube: Path | None = None) -> list[Path]:
    """One NDVI COG per forecast step, streamed from the finished file (cube/cog.py export_cogs); with `cube`,
    its observed context frames too; and the QGIS project and styles of them all (qgis/folder.py)."""
    with open_grid(forecast) as ds:
        tags = {"MEMBERS": str(ds.attrs.get("members", "")), "METEO_SOURCE": str(ds.attrs.get("meteo_source", "")),
                "TRAINING_DOMAIN": str(ds.attrs.get("training_domain", "unknown"))}
        context_dates = str(ds.attrs.get("context_dates", "")).split()

    def finish(staging: Path) -> None:  # the COG folder before it is renamed into place
        if cube is not None:
            write_context_cogs(cube, context_dates, staging)
        write_folder_project(staging, name="forecast", title=run_title("forecast", forecast))

    return export_cogs(forecast, [(PRED, {}, PRED)], folder, extra_tags=tags, finish=finish)


__all__ = ["ForecastJob", "ForecastSettings", "ForecastSummary", "run_forecasts", "write_forecast_cogs"]
