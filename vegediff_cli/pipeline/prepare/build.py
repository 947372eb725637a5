"""prepare: raw Sentinel-2 (a cube or GeoTIFF scenes) + meteorology + static layers -> the model-ready cube.

Steps: open the raw input lazily (dask chunks) -> put it on the target grid (its own, or that
of a ``--like`` cube) -> valid mask from SCL -> 5-day frames, latest clear observation per pixel
(frames.py) -> count clear pixels (NoValidDataError when there are none) -> meteorology
(meteo.py) -> static layers. The cube comes back lazy; ``write_prepared`` streams it to NetCDF
chunk by chunk, so a full tile never has to fit in memory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from ...config import BANDS, DEFAULT_CLEAR_SCL, DLMASK, METEO_VARS, SCL, STATIC_LAYERS, VALID, meteo_name
from ...cube import schema
from ...cube.masks import clear_from_scl
from ...cube.readers import open_cube
from ...cube.schema import TargetGrid
from ...cube.validate import check_reflectance
from ...errors import NoValidDataError, UsageError
from ...progress import ProgressFactory, no_progress
from ...redact import redact
from ...sources import era5, static
from ...sources.scenes import inspect_scenes, read_scene
from ..meteo import frames as meteo
from . import frames as framing
from .compute import compute, small_netcdf_cache
from .regrid import reproject_dataset

log = logging.getLogger("vegediff.prepare")
MINICUBE_SOURCES = ("greenearthnet", "earthnet2021x")
METEO_MODES = ("auto", "open-meteo", "none")
TIME_RULE = ("one frame every 5 days; frame t covers days t-4..t; each pixel holds the latest clear observation "
             "in its window; no temporal gap filling (invalid = NaN, valid_mask 0)")


@dataclass(frozen=True)
class PrepareSettings:
    """How prepare builds the cube (CLI options map one to one)."""

    clear_classes: tuple[int, ...] = DEFAULT_CLEAR_SCL  # SCL classes counted as clear (GreenEarthNet's set)
    anchor: pd.Timestamp | None = None  # a date that must be a frame date; None = phase with most acquisitions on frames
    meteo_layout: str = "auto"  # auto, series or grid (see meteo.py)
    max_meteo_distance_km: float = 25.0  # farthest a point meteorology series may lie from the cube centre
    chunk_px: int = 1024  # edge of the dask chunks (pixels): bounds memory per worker thread
    href_schemes: tuple[str, ...] = ("https", "http")  # URL schemes static-layer asset hrefs may use (sources/hrefs.py)


@dataclass(frozen=True)
class PrepareInputs:
    """Where the data comes from: one Sentinel-2 source, at most one meteorology source, static layers."""

    source: Path | None = None  # raw cube (s2_raw.nc from fetch), vegediff cube, minicube or EarthNet2021 .npz
    scenes: tuple[Path, ...] = ()  # multi-band GeoTIFF scenes, instead of `source`
    like: Path | None = None  # write the cube on this cube's grid (e.g. a GreenEarthNet minicube)
    era5: tuple[Path, ...] = ()  # ERA5 NetCDF (CDS hourly, CDS daily statistics or CF daily)
    era5_download: Path | None = None  # download hourly ERA5 for the cube with cdsapi into this file first
    eobs: tuple[Path, ...] = ()  # E-OBS NetCDF files
    meteo_from: Path | None = None  # use the daily eobs_* series of this GreenEarthNet minicube
    # Downloaded meteorology: "none" (library default: never touch the network), "auto" (Open-Meteo's
    # ERA5 archive when no file is given and the input has no series of its own; the CLI default),
    # "open-meteo" (always, replacing the input's own series).
    meteo: str = "none"
    open_meteo: Any = None  # sources.openmeteo.OpenMeteo client; None: from the environment
    dem: Path | None = None  # local DEM GeoTIFF -> cop_dem
    landcover: Path | None = None  # local ESA WorldCover GeoTIFF -> esawc_lc
    static_stac_url: str | None = None  # STAC API with cop-dem-glo-30 and esa-worldcover collections


@dataclass
class PreparedCube:
    """The lazy cube plus what was learnt while building it (for summaries and logs)."""

    cube: xr.Dataset
    clear_fraction: np.ndarray  # (time,) share of clear pixels per frame
    acquisitions: np.ndarray  # (time,) acquisitions inside each frame's window
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        cube = self.cube
        grid = schema.grid_of(cube)
        times = pd.DatetimeIndex(cube["time"].values)
        return {
            "source": cube.attrs.get("source"),
            "crs": grid.crs,
            "shape": {"time": int(cube.sizes["time"]), "y": grid.height, "x": grid.width},
            "resolution": list(grid.resolution),
            "bounds": list(grid.bounds),
            "first_date": f"{times[0]:%Y-%m-%d}",
            "last_date": f"{times[-1]:%Y-%m-%d}",
            "clear_fraction": round(float(self.clear_fraction.mean()), 4),
            "frames_with_clear_pixels": int((self.clear_fraction > 0).sum()),
            "frames": [{"date": f"{t:%Y-%m-%d}", "acquisitions": int(n), "clear_fraction": round(float(c), 4)}
                       for t, n, c in zip(times, self.acquisitions, self.clear_fraction, strict=True)],
            "meteorology": [v for v in METEO_VARS if meteo_name(v) in cube],
            "meteo_source": cube.attrs.get("meteo_source", "none"),
            "meteo_layout": cube.attrs.get("meteo_layout", "none"),
            "static_layers": [name for name in STATIC_LAYERS if name in cube],
            "missing_static_layers": cube.attrs.get("missing_static_layers", "").split(),
            "notes": self.notes,
        }


# --- raw input --------------------------------------------------------------------------------
def _merge_same_day(parts: list[xr.Dataset]) -> xr.Dataset:
    """Scenes of one day (neighbouring tiles, overlapping orbits): the first with data wins per pixel."""
    merged = parts[0]
    for other in parts[1:]:
        for name in merged.data_vars:
            if name == SCL:
                merged[name] = merged[name].where(merged[name] != 0, other[name])
            else:
                merged[name] = merged[name].where(np.isfinite(merged[name]), other[name])
    return merged


def _raw_from_scenes(paths: Sequence[Path], target: TargetGrid | None, chunk_px: int) -> tuple[xr.Dataset, TargetGrid]:
    scenes = inspect_scenes(paths)
    target = target or TargetGrid.of_grid(scenes[0].grid)
    by_day: dict[pd.Timestamp, list[xr.Dataset]] = {}
    for scene in scenes:
        ds = read_scene(scene, chunk_px=chunk_px)
        if target.same_as(scene.grid):
            ds = ds.assign_coords(y=target.y, x=target.x)
        else:
            ds = reproject_dataset(ds.drop_vars("spatial_ref", errors="ignore"), scene.grid, target, chunk_px=chunk_px)
        by_day.setdefault(scene.date, []).append(ds.drop_vars("spatial_ref", errors="ignore"))
    days = sorted(by_day)
    raw = xr.concat([_merge_same_day(by_day[d]) for d in days], dim=pd.DatetimeIndex(days, name="time").as_unit("ns"),
                    coords="minimal", compat="override")
    raw.attrs = {"source": "scenes", "prepared_from": ", ".join(p.name for p in paths[:10]) +
                 (f" and {len(paths) - 10} more" if len(paths) > 10 else "")}
    return raw, target


def _raw_from_cube(path: Path, target: TargetGrid | None, chunk_px: int) -> tuple[xr.Dataset, TargetGrid]:
    ds = open_cube(path)
    check_reflectance(ds, source=str(path))
    own = TargetGrid.of_dataset(ds)
    ds = ds.drop_vars("spatial_ref", errors="ignore")
    spatial = {"time": 1, "y": chunk_px, "x": chunk_px}
    ds = ds.chunk({dim: size for dim, size in spatial.items() if dim in ds.dims})
    if target is not None and not target.same_as(own.grid):
        ds = reproject_dataset(ds, own.grid, target, chunk_px=chunk_px)
    else:
        target = own
    for band in BANDS:  # int16 x 1e-4 decodes to float64: halve the memory of every chunk
        ds[band] = ds[band].astype("float32")
    ds.attrs = {"source": ds.attrs.get("source", "cube"), "prepared_from": path.name,
                **{k: v for k, v in ds.attrs.items() if k == "data_licence"}}
    return ds, target


def _clear(raw: xr.Dataset, classes: tuple[int, ...]) -> xr.DataArray:
    """Per-acquisition clear-sky flag: GreenEarthNet's SCL rule (and dlmask < 1), else the input's valid_mask.

    Band completeness is checked on the composite (frames.composite), where it is cheaper.
    """
    if SCL not in raw:
        if classes != DEFAULT_CLEAR_SCL:
            log.warning("the input has no s2_SCL: `clear_classes` has no effect, its valid_mask is used")
        return raw[VALID].astype(bool)
    args = [raw[SCL]] + ([raw[DLMASK]] if DLMASK in raw else [])

    def rule(scl, dlmask=None):
        return clear_from_scl(scl, dlmask=dlmask, clear_classes=classes)

    return xr.apply_ufunc(rule, *args, dask="parallelized", output_dtypes=[bool])


# --- the whole step ------------------------------------------------------------------------------
def build_cube(
    inputs: PrepareInputs, *, settings: PrepareSettings = PrepareSettings(), progress: ProgressFactory = no_progress
) -> PreparedCube:
    """Build the analysis-ready cube (lazy); raises NoValidDataError when no pixel is ever clear."""
    with small_netcdf_cache():  # the raw cube is opened here and read later, chunk by chunk
        return _build(inputs, settings, progress)


def check_settings(settings: PrepareSettings) -> None:
    """UsageError for settings no cube can be built with (checked before any file is read)."""
    if settings.meteo_layout not in meteo.LAYOUTS:
        raise UsageError(f"`meteo_layout` '{settings.meteo_layout}' is not one of {', '.join(meteo.LAYOUTS)}",
                         fix="use auto (default), series or grid")
    distance = settings.max_meteo_distance_km
    if not (isinstance(distance, int | float) and np.isfinite(distance) and distance > 0):
        raise UsageError(f"`max_meteo_distance` {distance} must be a positive number of km", fix="e.g. 25")


def _build(inputs: PrepareInputs, settings: PrepareSettings, progress: ProgressFactory) -> PreparedCube:
    check_settings(settings)
    if (inputs.source is None) == (not inputs.scenes):
        raise UsageError("give either an input cube or `scenes`, not both or neither",
                         fix="pass `input`/`tile` for a fetched cube, or `scenes` FILE... for GeoTIFF scenes")
    notes: list[str] = []
    like = TargetGrid.of_dataset(open_cube(inputs.like)) if inputs.like else None
    if inputs.scenes:
        raw, target = _raw_from_scenes(list(inputs.scenes), like, settings.chunk_px)
    else:
        raw, target = _raw_from_cube(Path(inputs.source), like, settings.chunk_px)
    raw_kind = raw.attrs["source"]
    raw[VALID] = _clear(raw, settings.clear_classes).astype("uint8")

    acquisitions = pd.DatetimeIndex(raw["time"].values)
    frame_times = framing.frame_dates(acquisitions, anchor=settings.anchor)
    members = framing.frame_members(acquisitions, frame_times)
    cube = framing.composite(raw, frame_times)
    cube = cube.assign_coords(y=target.y, x=target.x)

    counts = compute(cube[VALID].sum(dim=("y", "x"), dtype="int64"), progress=progress, desc="checking clear pixels")
    clear_fraction = np.asarray(counts, dtype="float64") / float(target.grid.width * target.grid.height)
    if int(np.sum(counts)) == 0:
        raise NoValidDataError(
            f"{raw.attrs.get('prepared_from', 'the input')} has no clear observation in any frame "
            f"({len(acquisitions)} acquisitions, clear SCL classes {','.join(map(str, settings.clear_classes))})",
            fix="widen the date range or the accepted SCL classes (`clear_classes`)",
        )
    cube[VALID].attrs = {"long_name": "clear-sky valid observation flag",
                         "clear_scl_classes": " ".join(map(str, settings.clear_classes))}
    for name, long_name in ((SCL, "Sentinel-2 scene classification of the chosen observation"),
                            (DLMASK, "GreenEarthNet cloud mask of the chosen observation")):
        if name in cube:
            cube[name].attrs = {"long_name": long_name}
    for band in BANDS:
        cube[band].attrs = {"long_name": schema.BAND_LONG_NAMES[band], "units": "1"}
    attrs = {
        "prepared_from": raw.attrs.get("prepared_from", ""),
        "input_source": raw_kind,
        "time_rule": TIME_RULE,
        "frame_phase_anchor": f"{frame_times[0]:%Y-%m-%d}",
        **{k: v for k, v in raw.attrs.items() if k == "data_licence"},
    }
    cube = schema.finalise(cube, crs=target.grid.crs, source="prepare", attrs=attrs)

    cube = _attach_meteo(cube, raw, inputs, settings, target, notes, same_frames=acquisitions.equals(frame_times))
    cube = _attach_static(cube, raw, inputs, target, notes, href_schemes=settings.href_schemes)
    return PreparedCube(cube=cube, clear_fraction=clear_fraction, acquisitions=framing.observation_count(members),
                        notes=notes)


def _attach_meteo(cube, raw, inputs, settings, target, notes, *, same_frames: bool) -> xr.Dataset:
    frame_times = pd.DatetimeIndex(cube["time"].values)
    request = meteo.request_for(frame_times, target, max_point_distance_km=settings.max_meteo_distance_km)
    era5_files = tuple(inputs.era5)
    if inputs.era5_download is not None:
        era5_files = (*era5_files, era5.download_era5(request, inputs.era5_download))
    meteo_from = inputs.meteo_from
    own = [meteo_name(v) for v in METEO_VARS if meteo_name(v) in raw]
    explicit = bool(era5_files or inputs.eobs or meteo_from)
    if inputs.meteo not in METEO_MODES:
        raise UsageError(f"`meteo` '{inputs.meteo}' is not one of {', '.join(METEO_MODES)}")
    if explicit and inputs.meteo == "open-meteo":
        raise UsageError("`meteo` open-meteo and a meteorology file were both given", fix="pass one meteorology source per run")
    minicube = raw.attrs.get("source") in MINICUBE_SOURCES and inputs.source is not None
    if inputs.meteo == "open-meteo" or (inputs.meteo == "auto" and not explicit and not own and not minicube):
        return _attach_open_meteo(cube, request, inputs, settings, target, notes)
    if not explicit and own and same_frames:
        for name in own:  # the input's own (time, stat) meteorology already sits on these frames
            cube[name] = raw[name].load()
        cube = cube.assign_coords(stat=raw["stat"].values)
        cube.attrs.update({"meteo_source": "input cube", "meteo_layout": "series"})
        return cube
    if not explicit and minicube:
        meteo_from = inputs.source  # re-aggregate the minicube's daily series onto the new frames
    daily = meteo.load_daily(request, era5_files=era5_files, eobs_files=tuple(inputs.eobs), meteo_from=meteo_from)
    if daily is None:
        message = ("no meteorology (`meteo` none and no `era5`, `eobs` or `meteo_from`): the cube has no eobs_* "
                   "variables, so forecasts from it are unconditional")
        log.warning(message)
        notes.append(message)
        cube.attrs["meteo_source"] = "none"
        return cube
    if daily.attrs.get("meteo_unit_notes"):
        notes.extend(daily.attrs["meteo_unit_notes"].split(" | "))
    return meteo.place(cube, daily, target, layout=settings.meteo_layout)


def _attach_open_meteo(cube, request, inputs, settings, target, notes) -> xr.Dataset:
    from ...sources.openmeteo import OpenMeteo

    client = inputs.open_meteo or OpenMeteo.from_env()
    daily = meteo.load_open_meteo(request, target, layout=settings.meteo_layout, client=client)
    transfer = client.transfer
    message = (f"meteorology: Open-Meteo ERA5 archive, {daily.attrs['meteo_cells']} cells, {transfer.requests} request(s), "
               f"{transfer.bytes / 1e3:.0f} kB ({transfer.cached} from cache)")
    log.info(message)
    notes.append(message)
    if daily.attrs.get("meteo_unit_notes"):
        notes.extend(daily.attrs["meteo_unit_notes"].split(" | "))
    return meteo.place(cube, daily, target, layout=settings.meteo_layout)


def _attach_static(cube, raw, inputs, target, notes, *, href_schemes: tuple[str, ...]) -> xr.Dataset:
    layers: dict[str, np.ndarray] = {}
    sources: list[str] = []
    for name in STATIC_LAYERS:
        if name in raw and set(raw[name].dims) == {"y", "x"}:
            layers[name] = np.asarray(raw[name].transpose("y", "x").values, dtype="float32")
    if layers:
        sources.append("input cube")
    for path, layer in ((inputs.dem, static.DEM), (inputs.landcover, static.LANDCOVER)):
        if path is not None:
            layers[layer.name] = static.read_local_layer(path, target.grid, layer, notes=notes)
            sources.append(f"{layer.name}: {Path(path).name}")
    if inputs.static_stac_url:
        wanted = tuple(layer for layer in static.STAC_LAYERS
                       if not (layer is static.DEM and inputs.dem) and not (layer is static.LANDCOVER and inputs.landcover))
        found = static.read_stac_layers(inputs.static_stac_url, target.grid, layers=wanted, notes=notes,
                                        href_schemes=href_schemes)
        layers.update(found)
        sources.extend(f"{name}: {redact(inputs.static_stac_url)}" for name in found)
    cube = cube.drop_vars([n for n in STATIC_LAYERS if n in cube])
    cube = schema.add_static(cube, layers)
    cube.attrs["static_sources"] = "; ".join(sources) or "none"
    if cube.attrs["missing_static_layers"]:
        log.info("static layers not available: %s", cube.attrs["missing_static_layers"])
    return cube


def prepare_cube(
    source: str | os.PathLike | None = None,
    *,
    clear_classes: Sequence[int] = DEFAULT_CLEAR_SCL,
    progress: ProgressFactory = no_progress,
    **inputs: Any,
) -> xr.Dataset:
    """Convenience wrapper: `build_cube` from keyword inputs, returning just the (lazy) cube."""
    request = PrepareInputs(source=Path(source) if source is not None else None, **inputs)
    settings = PrepareSettings(clear_classes=tuple(sorted(set(clear_classes))))
    return build_cube(request, settings=settings, progress=progress).cube
