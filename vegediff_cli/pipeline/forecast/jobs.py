"""Which forecasts a request asks for: the cube, output file and COG folder of each (one per tile or input)."""

from __future__ import annotations

from pathlib import Path

from ...errors import UsageError
from ...workdir import TileFiles, resolve_input, resolve_output
from ..meteo.weather import check_mode
from .run import ForecastJob


def cogs_beside(output: Path) -> Path:
    """COG folder of an explicitly named output file: <stem>_cogs next to it."""
    return output.with_name(f"{output.stem}_cogs")


def plan_jobs(tiles: list[str], inputs: list[Path], output: Path | None, root: Path, *, cogs: bool,
              weather: str | Path | None) -> list[ForecastJob]:
    """Inputs and outputs of every forecast (one per tile / input); `weather` is a mode or a file."""
    weather_file = Path(weather) if weather is not None and check_mode(weather) is None else None
    if len(tiles) <= 1 and len(inputs) <= 1:
        tile = tiles[0] if tiles else None
        cube = resolve_input(inputs[0] if inputs else None, tile, root, "cube", made_by="prepare")
        target = resolve_output(output, tile, root, "forecast", inputs=(cube, weather_file))
        folder = cogs_beside(target) if output is not None else TileFiles.of(root, tile).forecast_cogs
        files = TileFiles.of(root, tile) if tile is not None and not inputs else None
        return [ForecastJob(cube, target, folder if cogs else None, weather, tile=files)]
    if output is not None and not inputs:
        raise UsageError("`output` names one file but several `tile` forecasts were asked for",
                         fix="leave `output` out: each tile's forecast goes to <workdir>/<TILE>/forecast.nc")
    jobs = [ForecastJob(resolve_input(None, t, root, "cube", made_by="prepare"), TileFiles.of(root, t).forecast,
                        TileFiles.of(root, t).forecast_cogs if cogs else None, weather, tile=TileFiles.of(root, t))
            for t in tiles]
    if inputs:
        if output is None or output.suffix:
            raise UsageError("several `input` cubes need `output` DIR (a folder for their forecasts)",
                             fix="pass `output` DIR; each forecast is written as DIR/<input name>_forecast.nc")
        for path in inputs:
            target = output / f"{path.stem}_forecast.nc"
            jobs.append(ForecastJob(resolve_input(path, None, root, "cube", made_by="prepare"), target,
                                    cogs_beside(target) if cogs else None, weather))
    return jobs
