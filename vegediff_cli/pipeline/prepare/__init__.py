"""prepare: raw Sentinel-2 + meteorology + static layers -> the analysis-ready 5-day cube.

Modules: build.py (the step, end to end), frames.py (5-day frames, latest clear observation),
regrid.py (lazy reprojection onto a cube.schema.TargetGrid; meteorology: pipeline/meteo/frames.py),
compute.py (dask progress, streaming writes, NDVI on the fly).
"""

from .build import PreparedCube, PrepareInputs, PrepareSettings, build_cube, prepare_cube
from .compute import lazy_ndvi, write_prepared

__all__ = [
    "PrepareInputs", "PrepareSettings", "PreparedCube", "build_cube", "lazy_ndvi", "prepare_cube", "write_prepared",
]
