"""Which forecast an ensemble summarises, and whether that forecast must be (re)run first.

An ensemble reads a forecast file. For a tile it is the tile's forecast.nc, run again when it is
missing, holds too few members, was made from an older cube, or was made with other settings than
the ones asked for; a forecast given as a file is read as it is; a cube given as a file is always
forecast first. `ensemble_sources` names the files, `forecast_cube` takes the rerun decision.
"""

from __future__ import annotations

from pathlib import Path

from ...cube import provenance
from ...cube.readers import open_netcdf
from ...errors import InputNotFoundError, UsageError
from ...workdir import TileFiles, resolve_input
from ..forecast.plan import ForecastSettings

MIN_MEMBERS = 2  # an ensemble of fewer members has no spread
ASKABLE = ("seed", "horizon", "sampler", "steps", "guidance", "start", "precision")  # settings a rerun may be asked for


def is_forecast(path: Path) -> bool:
    """True for a forecast file (ndvi_pred), False for a cube; errors for anything unreadable."""
    if path.suffix.lower() == ".npz":
        return False
    ds = open_netcdf(path)
    try:
        return "ndvi_pred" in ds
    finally:
        ds.close()


def ensemble_sources(input: Path | None, tile: str | None, root: Path, target: Path,
                     forecast_output: Path | None) -> tuple[Path, Path | None]:
    """(forecast file to read, or to write first; cube to forecast from, or None)."""
    if input is not None:
        if not input.exists():
            raise InputNotFoundError(f"{input} does not exist", fix="check the path, or run `vegediff forecast` first")
        if is_forecast(input):
            return input, None
        return forecast_output or target.with_name(f"{target.stem}_forecast.nc"), input
    if tile is None:
        raise UsageError("no input given", fix="pass `tile` TILE (uses the working directory) or `input` PATH")
    return forecast_output or TileFiles.of(root, tile).forecast, None


def stale_reason(forecast_file: Path, cube_file: Path, settings: ForecastSettings, *,
                 asked: set[str]) -> str | None:
    """Why the tile's existing forecast does not answer this request (None: it does).

    It is stale when the cube changed since the forecast was made from it (the identity the forecast
    records; the modification time for forecasts of older versions), or when a setting in `asked` (names
    from ASKABLE) differs from what the forecast was made with (settings not asked for accept whatever
    it was made with).
    """
    if provenance.made_from(forecast_file) is not None:
        if provenance.stale_input(forecast_file, "cube", cube_file):
            return f"{cube_file} changed since {forecast_file} was made from it"
    elif cube_file.stat().st_mtime > forecast_file.stat().st_mtime:  # a forecast of an older version
        return f"{cube_file} is newer than {forecast_file}"
    ds = open_netcdf(forecast_file)
    try:
        attrs = dict(ds.attrs)
    finally:
        ds.close()
    wanted = {"seed": settings.seed, "horizon": settings.horizon, "sampler": settings.sampler.sampler,
              "steps": settings.sampler.steps,
              "guidance_scale": settings.sampler.guidance_scale,
              "forecast_start": f"{settings.start:%Y-%m-%d}" if settings.start is not None else None,
              "precision": settings.precision if settings.precision != "auto" else None}
    setting = {"guidance_scale": "guidance", "forecast_start": "start"}
    if str(attrs.get("conditioned", "")).lower() not in ("1", "true"):
        wanted.pop("guidance_scale")  # an unconditioned forecast records guidance 1
    for key, value in wanted.items():
        if setting.get(key, key) not in asked or value is None:
            continue
        have = attrs.get(key)
        if have is not None and str(have) != str(value) and not _same_number(have, value):
            return f"it was made with {key}={have}, this run asks for {value}"
    return None


def _same_number(a: object, b: object) -> bool:
    try:
        return abs(float(a) - float(b)) < 1e-9
    except (TypeError, ValueError):
        return False


def needs_run(forecast_file: Path, members: int | None, *, from_input: bool) -> bool:
    """Whether the tile's forecast must be (re)run to get enough members; a given forecast is never rerun."""
    if not forecast_file.exists():
        return True
    from .run import forecast_members

    have = forecast_members(forecast_file)
    enough = have >= (members if members is not None else MIN_MEMBERS)
    if not enough and from_input:
        raise UsageError(f"{forecast_file} holds {have} member(s), fewer than the {members or MIN_MEMBERS} needed",
                         fix="pass the cube it came from as `input` (or use `tile`) to re-run the forecast with `members`")
    return not enough


def forecast_cube(forecast_file: Path, cube: Path | None, *, tile: str | None, root: Path, from_input: bool,
                  members: int | None, settings: ForecastSettings, asked: set[str]) -> tuple[Path | None, str | None]:
    """(the cube to run the forecast from first, or None when `forecast_file` answers as it is; why it is run).

    `cube` is ensemble_sources' cube (a cube given as input is always forecast); `members` the members
    asked for (None: any ensemble will do); `asked` the settings asked for explicitly (see stale_reason).
    """
    reason = None
    cube_file = TileFiles.of(root, tile).cube if not from_input else None
    if cube is None and cube_file is not None and cube_file.exists() and forecast_file.exists():
        reason = stale_reason(forecast_file, cube_file, settings, asked=asked)
        if reason is not None:
            cube = cube_file
    if cube is not None or needs_run(forecast_file, members, from_input=from_input):
        return cube or resolve_input(None, tile, root, "cube", made_by="prepare"), reason
    return None, None
