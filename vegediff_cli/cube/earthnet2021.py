"""Original EarthNet2021 ``.npz`` samples (context/target pairs) -> vegediff cube.

File names encode the MGRS tile, the 150-day period and the pixel offsets of the 128 x 128
window on the tile's 20 m grid: ``{context|target}_{tile}_{start}_{end}_{x0}_{x1}_{y0}_{y1}_
{mx0}_{mx1}_{my0}_{my1}.npz``. Value scalings follow the EarthNet2021 specification:
reflectance 0-2 (NaN = missing), E-OBS ``rr = 50 v`` mm, ``pp = 200 v + 900`` hPa,
``t = 50 (2 v - 1)`` degC, EU-DEM ``2000 (2 v - 1)`` m; frame k is dated ``start + 5k + 4``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from affine import Affine

from ..config import PIXEL_SIZE_M, STEP_DAYS
from ..errors import CorruptInputError, MissingVariableError
from ..geo import GridSpec, tile_grid
from . import schema
from .masks import valid_from_sources

_NAME_RE = re.compile(
    r"^(?:(context|target)_)?(\d{2}[A-Z]{3})_(\d{4}-\d{2}-\d{2})_(\d{4}-\d{2}-\d{2})_"
    r"(\d+)_(\d+)_(\d+)_(\d+)_(\d+)_(\d+)_(\d+)_(\d+)\.npz$"
)
MESO_VARS = ("rr", "pp", "tg", "tn", "tx")  # channel order of `mesodynamic`
LICENCE_NOTE = "EarthNet2021: CC-BY-NC-SA-4.0 (Sentinel-2 Copernicus open data, E-OBS non-commercial, EU-DEM)"


@dataclass(frozen=True)
class SampleName:
    part: str | None  # "context", "target" or None
    tile: str
    start: pd.Timestamp
    end: pd.Timestamp
    col0: int  # window offset on the tile's 20 m grid, in pixels
    row0: int
    raw: str  # the file name

    @property
    def stem(self) -> str:
        """The name without its context_/target_ prefix."""
        return self.raw.split("_", 1)[1] if self.part else self.raw


def parse_name(path: Path) -> SampleName:
    match = _NAME_RE.match(path.name)
    if match is None:
        raise CorruptInputError(
            f"{path.name} does not follow EarthNet2021's naming (context_<tile>_<start>_<end>_<offsets>.npz)",
            fix="keep the original file names; they carry the location and dates",
        )
    part, tile, start, end, x0, _x1, y0, _y1 = match.groups()[:8]
    return SampleName(part, tile, pd.Timestamp(start), pd.Timestamp(end), int(x0), int(y0), path.name)


def partner_of(path: Path, name: SampleName) -> Path | None:
    """The matching target for a context file (or context for a target), if present."""
    if name.part is None:
        return None
    other = "target" if name.part == "context" else "context"
    candidates = [
        path.parent.parent / other / f"{other}_{name.stem}",
        path.parent / f"{other}_{name.stem}",
    ]
    return next((c for c in candidates if c.exists()), None)


def sample_grid(name: SampleName, size: int) -> GridSpec:
    tile = tile_grid(name.tile)
    transform = tile.transform @ Affine.translation(name.col0, name.row0)
    assert transform.a == PIXEL_SIZE_M
    return GridSpec(tile.crs, transform, size, size)


def _load(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as npz:
            return {k: npz[k] for k in npz.files}
    except Exception as exc:  # zipfile/pickle errors for truncated or foreign files
        raise CorruptInputError(f"cannot read {path} as an EarthNet2021 .npz ({exc})", fix="re-download the sample") from exc


def _decode_meso(meso: np.ndarray) -> dict[str, np.ndarray]:
    """Centre 2 x 2 E-OBS pixels of the (80, 80, 5, days) meso cube, in physical units."""
    h, w = meso.shape[:2]
    centre = meso[h // 2 - 1 : h // 2 + 1, w // 2 - 1 : w // 2 + 1].astype("float64")
    centre = np.where(centre[:, :, 1:2] > 0, centre, np.nan)  # PP == 0 marks missing E-OBS
    series = np.nanmean(centre, axis=(0, 1))  # (5, days)
    decode = {
        "rr": lambda v: 50.0 * v,
        "pp": lambda v: 200.0 * v + 900.0,
        "tg": lambda v: 50.0 * (2.0 * v - 1.0),
        "tn": lambda v: 50.0 * (2.0 * v - 1.0),
        "tx": lambda v: 50.0 * (2.0 * v - 1.0),
    }
    return {var: decode[var](series[i]) for i, var in enumerate(MESO_VARS)}


def read_sample(path: Path) -> schema.xr.Dataset:
    """Read one EarthNet2021 sample; joins context and target when both files are present."""
    name = parse_name(path)
    parts = {name.part or "context": _load(path)}
    partner = partner_of(path, name)
    if partner is not None:
        parts["target" if name.part == "context" else "context"] = _load(partner)
    for part, arrays in parts.items():
        if "highresdynamic" not in arrays:
            raise MissingVariableError(f"{part} file of {name.stem} lacks 'highresdynamic'", fix="use an original sample")
    hrd = np.concatenate([parts[p]["highresdynamic"] for p in ("context", "target") if p in parts], axis=-1)
    hrd = hrd.astype("float32")  # (H, W, C, T)
    size = hrd.shape[0]
    bands = np.transpose(hrd[:, :, :4, :], (3, 2, 0, 1))  # (T, 4, H, W)
    cloud = np.transpose(hrd[:, :, -1, :], (2, 0, 1))  # EarthNet2021 quality mask, 1 = bad
    valid = valid_from_sources(bands, cloud=cloud)
    n_frames = bands.shape[0]
    first_part_offset = 0 if "context" in parts else 10  # a lone target starts at frame 10
    times = [name.start + pd.Timedelta(days=STEP_DAYS * (k + first_part_offset) + STEP_DAYS - 1) for k in range(n_frames)]

    grid = sample_grid(name, size)
    y, x = schema.grid_coords(grid)
    ds = schema.new_cube(
        times=times, y=y, x=x, crs=grid.crs, bands=bands, valid=valid, source="earthnet2021",
        attrs={"source_file": path.name, "tile": name.tile, "data_licence": LICENCE_NOTE,
               "georeference_note": "from the tile name and pixel offsets on the Sentinel-2 20 m tile grid"},
    )
    context = parts.get("context")
    if context is not None and context.get("mesodynamic") is not None and context["mesodynamic"].shape[-1] > 0:
        meso = context["mesodynamic"]
        days = pd.date_range(name.start, periods=meso.shape[-1], freq="D")
        ds = schema.add_meteo(ds, _decode_meso(meso), days)
    static = {}
    if context is not None and "highresstatic" in context:
        static["cop_dem"] = 2000.0 * (2.0 * context["highresstatic"][:, :, 0].astype("float64") - 1.0)
    ds = schema.add_static(ds, static)
    if "cop_dem" in ds:
        ds["cop_dem"].attrs["provider"] = "EU-DEM v1.1 (EarthNet2021 highresstatic)"
    return ds
