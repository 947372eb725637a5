"""Make sample_data/29SND_2017_sample.nc, the demo cube bundled with vegediff.

It is the EarthNet2021x minicube of a Portuguese site (tile 29SND, 39.17 N 8.05 W,
2017-06-20 .. 2017-11-16) converted with vegediff's own reader into the vegediff cube format:
30 five-day frames of 128 x 128 px at ~20 m, B02 B03 B04 B8A reflectance, SCL and cloud masks,
E-OBS meteorology aggregated per frame, and the static layers.

    python sample_data/make_sample.py            # reads ../shared/data (see README there)

The source lies outside this repository; this script is how the bundled file was made.
Licence of the data in the file: CC-BY-NC-SA-4.0 (EarthNet2021x; E-OBS non-commercial).
"""

from __future__ import annotations

import sys
from pathlib import Path

from vegediff_cli.cube.netcdf import write_netcdf
from vegediff_cli.cube.readers import open_cube

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent.parent / "shared" / "data" / "earthnet2021x" / "minicube_29SND_39.17_-8.05_2017.nc"
TARGET = HERE / "29SND_2017_sample.nc"


def main() -> int:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else SOURCE
    cube = open_cube(source)
    cube.attrs["title"] = "vegediff demo cube (EarthNet2021x minicube 29SND 2017)"
    cube.attrs["data_licence"] = "CC-BY-NC-SA-4.0 (EarthNet2021x); E-OBS: non-commercial research and education only"
    write_netcdf(cube, TARGET, complevel=9)
    print(f"wrote {TARGET} ({TARGET.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
