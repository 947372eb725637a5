"""Transfer volume and time of meteorology for one 110 km tile and one season, per candidate source.

Measured against loopback servers that speak each provider's protocol (this machine has no
internet); the real services' figures are derived from their documented formats:

- Open-Meteo archive API (chosen): `prepare`'s own code (pipeline/meteo/frames.load_open_meteo)
  asks the loopback server (tests/openmeteo_server.py, real E-OBS values of the 29SND minicube)
  for the ERA5 cells around the tile's grid nodes: requests, response bytes, wall time, with
  the server answering at once and with an emulated round trip (--latency). Open-Meteo's quota
  counts "calls": one per location, times days / 14 when a request spans more than 2 weeks
  (open-meteo.com/en/pricing), reported as `api_call_units`.
- ARCO-ERA5 Zarr (gs://gcp-public-data-arco-era5/ar/full_37-1h-0p25deg-chunk-1.zarr-v3): every
  single-level variable is chunked one hour x the whole globe (721 x 1440 float32 = 4.15 MB before
  compression), so a tile-season needs every hourly chunk of 7 variables whatever the area. The
  loopback part GETs --arco-chunks such objects (plain HTTP GET, the protocol of GCS public objects)
  to measure seconds per chunk; the totals are derived: chunks x size, chunks x seconds.
- CDS (cdsapi, account) and E-OBS: derived only (see docs/prepare.md).

    python benchmarks/meteo_transfer.py [--tile 29SND] [--start 2021-05-10 --end 2021-10-06] [--latency 0.15]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.openmeteo_server import OpenMeteoServer, archive_from_minicubes  # noqa: E402
from tests.stac_server import Catalogue, StacServer  # noqa: E402
from vegediff_cli.cube.schema import TargetGrid  # noqa: E402
from vegediff_cli.geo import tile_grid  # noqa: E402
from vegediff_cli.pipeline.meteo import frames as meteo  # noqa: E402
from vegediff_cli.sources.openmeteo import OpenMeteo  # noqa: E402

MINICUBE = ROOT.parent / "shared" / "data" / "greenearthnet" / "JAS2021_minicube_0_29SND_39.29_-8.56.nc"
ARCO_CHUNK_BYTES = 721 * 1440 * 4  # one hour of one variable, whole globe, float32
ARCO_VARIABLES = 7  # t2m, d2m, tp, msl, ssrd, u10, v10


def open_meteo(tile: str, start: str, end: str, latency: float) -> dict:
    target = TargetGrid.of_grid(tile_grid(tile))
    frames = pd.date_range(pd.Timestamp(start) + pd.Timedelta(days=4), end, freq="5D")
    request = meteo.request_for(frames, target, max_point_distance_km=25.0)
    with OpenMeteoServer(archive_from_minicubes([MINICUBE], half_width_deg=2.0)) as server, \
            tempfile.TemporaryDirectory() as cache:
        server.latency = latency
        client = OpenMeteo(server.archive_url, server.forecast_url, cache_dir=Path(cache))
        began = time.perf_counter()
        daily = meteo.load_open_meteo(request, target, layout="auto", client=client)
        seconds = time.perf_counter() - began
        cells = int(daily.attrs["meteo_cells"])
        days = len(request.days)
        layout = meteo.layout_for("auto", target, 0.25)
        return {"source": "open-meteo archive (loopback)", "latency_s": latency, "layout": layout,
                "days": days, "era5_cells": cells, "requests": client.transfer.requests,
                "response_bytes": client.transfer.bytes, "server_bytes_sent": server.bytes_sent(),
                "seconds": round(seconds, 3), "api_call_units": round(cells * max(1.0, days / 14.0), 1)}


def arco(start: str, end: str, chunks: int, latency: float) -> dict:
    hours = (pd.Timestamp(end) - pd.Timestamp(start)).days * 24 + 48  # the frames' days + the closing midnight
    needed = hours * ARCO_VARIABLES
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder) / "store"
        store.mkdir()
        field = (280 + 20 * np.cos(np.linspace(-np.pi / 2, np.pi / 2, 721))[:, None]
                 + rng.normal(0, 1, (721, 1440))).astype("<f4")
        (store / "0.0.0").write_bytes(field.tobytes())
        with StacServer(Catalogue(collections=[], items=[], files=Path(folder))) as server:
            server.latency = latency
            import requests

            session = requests.Session()
            began = time.perf_counter()
            received = 0
            for _ in range(chunks):
                received += len(session.get(f"{server.url}/files/store/0.0.0", timeout=60).content)
            seconds = time.perf_counter() - began
    per_chunk = seconds / chunks
    return {"source": "arco-era5 zarr (loopback GETs + derived totals)", "latency_s": latency,
            "chunks_measured": chunks, "seconds_per_chunk": round(per_chunk, 4), "bytes_per_chunk": ARCO_CHUNK_BYTES,
            "chunks_needed": needed, "derived_bytes_uncompressed": needed * ARCO_CHUNK_BYTES,
            "derived_seconds_serial_at_measured_rate": round(needed * per_chunk, 1), "received": received}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tile", default="29SND")
    parser.add_argument("--start", default="2021-05-10")
    parser.add_argument("--end", default="2021-10-06")
    parser.add_argument("--latency", type=float, nargs="*", default=[0.0, 0.15],
                        help="seconds added to every answer (an emulated round trip to a distant server)")
    parser.add_argument("--arco-chunks", type=int, default=24)
    args = parser.parse_args()
    rows = [open_meteo(args.tile, args.start, args.end, lat) for lat in args.latency]
    rows += [arco(args.start, args.end, args.arco_chunks, lat) for lat in args.latency]
    for row in rows:
        print(json.dumps(row))
    om = rows[0]
    a = rows[len(args.latency)]
    print(f"\n{args.tile} {args.start}..{args.end}: Open-Meteo {om['response_bytes'] / 1e3:.0f} kB in {om['requests']} "
          f"request(s) for {om['era5_cells']} ERA5 cells; ARCO-ERA5 {a['chunks_needed']} chunks = "
          f"{a['derived_bytes_uncompressed'] / 1e9:.0f} GB uncompressed "
          f"(x{a['derived_bytes_uncompressed'] / max(om['response_bytes'], 1):,.0f})")
    if math.isfinite(a["seconds_per_chunk"]):
        print(f"ARCO at the measured loopback rate: {a['derived_seconds_serial_at_measured_rate'] / 3600:.1f} h serial")


if __name__ == "__main__":
    main()
