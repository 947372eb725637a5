"""`vegediff prepare`: build the analysis-ready 5-day cube (mask, meteorology, static layers)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..config import DEFAULT_CLEAR_SCL
from ..dates import parse_day
from ..errors import UsageError
from ..workdir import resolve_input, resolve_output
from .options import InputOpt, JsonOpt, OutputOpt, QuietOpt, TileOpt, WorkdirOpt, emit_json, setup, workdir_of

if TYPE_CHECKING:
    import pandas as pd


def parse_classes(text: str) -> tuple[int, ...]:
    try:
        classes = tuple(sorted({int(v) for v in text.split(",") if v.strip()}))
    except ValueError:
        classes = ()
    if not classes or any(not 0 <= c <= 11 for c in classes):
        raise UsageError(f"--clear-classes '{text}' is not a list of SCL classes 0-11", fix="e.g. 4,5,6,7")
    return classes


def parse_anchor(text: str | None) -> pd.Timestamp | None:
    if text is None:
        return None
    import pandas as pd

    return pd.Timestamp(parse_day(text, name="anchor"))


def _scene_files(scenes: list[Path] | None, extra: list[Path] | None) -> tuple[Path, ...]:
    """--scenes values plus the paths a shell glob spilled after it; folders give their *.tif files."""
    if extra and not scenes:
        raise UsageError(f"unexpected argument '{extra[0]}'", fix="options take one value each; scenes go after --scenes")
    files: list[Path] = []
    for path in [*(scenes or []), *(extra or [])]:
        files.extend(sorted([*path.glob("*.tif"), *path.glob("*.tiff")]) if path.is_dir() else [path])
    if scenes and not files:
        raise UsageError(f"no GeoTIFF scenes found in {', '.join(map(str, scenes))}", fix="pass .tif files or a folder of them")
    return tuple(files)


def prepare(
    extra: Annotated[list[Path] | None, typer.Argument(hidden=True, show_default=False, metavar="[SCENES]...")] = None,
    tile: TileOpt = None,
    input: InputOpt = None,
    output: OutputOpt = None,
    workdir: WorkdirOpt = None,
    scenes: Annotated[list[Path] | None, typer.Option(
        "--scenes", help="Sentinel-2 GeoTIFF scenes (or a folder of them) instead of a fetched cube: "
                         "--scenes DIR/*.tif.", show_default=False)] = None,
    like: Annotated[Path | None, typer.Option(help="Put the cube on this cube's grid (e.g. a GreenEarthNet minicube).")] = None,
    era5: Annotated[list[Path] | None, typer.Option(
        help="ERA5 NetCDF from the CDS (hourly, daily statistics) or CF-named daily; repeat for several files.",
        show_default=False)] = None,
    era5_download: Annotated[Path | None, typer.Option(
        help="Download hourly ERA5 for the cube with cdsapi into this file (needs ~/.cdsapirc), then use it.")] = None,
    eobs: Annotated[list[Path] | None, typer.Option(
        help="E-OBS NetCDF files (tg tn tx rr pp hu fg qq); repeat for several files.", show_default=False)] = None,
    meteo_from: Annotated[Path | None, typer.Option(help="Use the daily eobs_* series of this GreenEarthNet minicube.")] = None,
    meteo: Annotated[str, typer.Option(
        envvar="VEGEDIFF_METEO",
        help="auto: download ERA5 from Open-Meteo (no account) when no file is given and the input has no "
             "meteorology; open-meteo: always; none: never touch the network (no file: a cube without meteorology).")] = "auto",
    meteo_layout: Annotated[str, typer.Option(
        help="series: one (time, stat) series per variable; grid: (time, stat, meteo_y, meteo_x); "
             "auto: grid when the cube spans more than one meteorology cell.")] = "auto",
    max_meteo_distance: Annotated[float, typer.Option(
        help="Farthest (km) a point series (--meteo-from, ERA5 by location) may lie from the cube centre.")] = 25.0,
    dem: Annotated[Path | None, typer.Option(help="DEM GeoTIFF (any CRS; bilinear onto the grid) -> cop_dem.")] = None,
    landcover: Annotated[Path | None, typer.Option(
        help="ESA WorldCover GeoTIFF (any CRS; nearest neighbour) -> esawc_lc.")] = None,
    static_stac_url: Annotated[str | None, typer.Option(
        help="STAC API with cop-dem-glo-30 and esa-worldcover collections (e.g. Planetary Computer).")] = None,
    href_schemes: Annotated[str, typer.Option(
        help="URL schemes the static-layer items' asset hrefs may use (add file or s3 only for STAC APIs you trust).")
    ] = "https,http",
    clear_classes: Annotated[
        str, typer.Option(help="SCL classes counted as clear (GreenEarthNet: 1,2,4,5,6,7).")
    ] = ",".join(map(str, DEFAULT_CLEAR_SCL)),
    anchor: Annotated[str | None, typer.Option(
        help="A date that must be a frame date (default: the 5-day phase with most acquisitions on frame dates).")] = None,
    chunk_px: Annotated[int, typer.Option(help="Dask chunk edge in pixels; smaller uses less memory.", min=64)] = 1024,
    cogs: Annotated[Path | None, typer.Option(help="Also write one NDVI COG per frame into this folder.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild the cube even when it is up to date "
                                                         "(made from the same inputs and settings).")] = False,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Turn a fetched cube or GeoTIFF scenes (or a GreenEarthNet minicube / EarthNet2021 sample) into the 5-day,
    analysis-ready cube with valid mask, E-OBS-equivalent meteorology and static layers."""
    from ..pipeline.prepare import PrepareInputs, PrepareSettings
    from ..pipeline.prepare.run import run_prepare
    from ..sources.hrefs import parse_schemes

    progress = setup(quiet)
    root = workdir_of(workdir)
    scene_files = _scene_files(scenes, extra)
    source = None if scene_files else resolve_input(input, tile, root, "raw", made_by="fetch")
    if scene_files and input is not None:
        raise UsageError("--input and --scenes were both given", fix="pass either a fetched cube or GeoTIFF scenes")
    readers = (source, like, meteo_from, *scene_files, *(era5 or ()), *(eobs or ()))
    target = resolve_output(output, tile, root, "cube", inputs=readers)
    inputs = PrepareInputs(
        source=source, scenes=scene_files, like=like, era5=tuple(era5 or ()), era5_download=era5_download,
        eobs=tuple(eobs or ()), meteo_from=meteo_from, meteo=meteo, dem=dem, landcover=landcover, static_stac_url=static_stac_url,
    )
    settings = PrepareSettings(
        clear_classes=parse_classes(clear_classes), anchor=parse_anchor(anchor), meteo_layout=meteo_layout,
        max_meteo_distance_km=max_meteo_distance, chunk_px=chunk_px, href_schemes=parse_schemes(href_schemes),
    )
    result = run_prepare(inputs, target, settings=settings, cogs=cogs, force=force, progress=progress)
    if json_out:
        emit_json(result.as_dict())


def register(app: typer.Typer) -> None:
    app.command("prepare")(prepare)
