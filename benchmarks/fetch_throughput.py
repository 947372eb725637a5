"""Throughput of `vegediff fetch` against the loopback STAC API: parallel vs serial reads.

Two workloads, each fetched with --workers 1 (serial) and --workers N (parallel):

- scenes: the 29SND catalogue of the tests (10 items, 7 dates, 35 small COGs from the real
  GEE scenes), a window around them; measures items/s;
- tile: the real Earth Search 29RKH item and its 5 real COGs fetched onto the full
  5490 x 5490 tile grid at 20 m (a full-size cube written block by block); measures MB/s,
  megapixels/s and the peak memory of the fetch process (it must stay far below the
  ~520 MB a tile frame would take in memory).

The server can add a per-request delay (--latency, seconds) to stand in for a distant object
store: parallel reads hide latency, which is what they are for. Each fetch runs in a child
process; its own timer (`seconds` in the --json summary) excludes interpreter start-up.
MB/s counts the bytes the server sent (COGs and STAC JSON). Nothing here is a test.

    python benchmarks/fetch_throughput.py [--workers 8] [--latency 0 0.05] [--skip-tile]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fixtures_stac import build_29rkh, build_29snd, tile_window  # noqa: E402
from tests.stac_server import StacServer  # noqa: E402
from vegediff_cli.geo import tile_grid  # noqa: E402


def run_fetch(args: list[str]) -> tuple[dict, float]:
    """One `vegediff fetch --json` child; returns its summary and peak RSS (MiB, from VmHWM)."""
    code = (
        "import sys, runpy\n"
        "sys.argv = ['vegediff'] + sys.argv[1:]\n"
        "try:\n"
        "    runpy.run_module('vegediff_cli', run_name='__main__')\n"
        "finally:\n"
        "    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')]\n"
        "    sys.stderr.write('PEAK ' + hwm[0].split()[1] + '\\n')\n"
    )
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"fetch failed ({done.returncode}): {done.stderr.strip().splitlines()[-2:]}")
    peak = next(float(line.split()[1]) / 1024 for line in done.stderr.splitlines() if line.startswith("PEAK "))
    return json.loads(done.stdout), peak


def measure(server: StacServer, args: list[str], out: Path) -> dict:
    server.reset_log()
    out.unlink(missing_ok=True)
    summary, peak = run_fetch([*args, "--output", str(out), "--json", "--quiet", "--force"])
    sent = server.bytes_sent()
    seconds = summary["seconds"]
    grid = summary["grid"]
    items = summary["items_used"]
    return {"seconds": seconds, "MB": sent / 1e6, "MB/s": sent / 1e6 / seconds, "items/s": items / seconds,
            "Mpx/s": len(summary["dates_fetched"]) * grid["width"] * grid["height"] / 1e6 / seconds,
            "peak_MiB": peak, "requests": len(server.log), "out_MB": out.stat().st_size / 1e6}


def report(name: str, latency: float, workers: int, m: dict) -> None:
    print(f"{name:7s} latency {latency * 1000:4.0f} ms  workers {workers:2d}  {m['seconds']:7.2f} s  "
          f"{m['MB']:7.2f} MB in {m['requests']:4d} requests  {m['MB/s']:7.2f} MB/s  {m['items/s']:6.2f} items/s  "
          f"{m['Mpx/s']:6.2f} Mpx/s  peak {m['peak_MiB']:6.0f} MiB  output {m['out_MB']:.1f} MB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8, help="parallel reads of the parallel runs")
    parser.add_argument("--latency", type=float, nargs="+", default=[0.0, 0.05], help="per-request delays (s)")
    parser.add_argument("--skip-tile", action="store_true", help="only the small scenes workload")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vegediff-fetch-bench-") as tmp, StacServer() as server:
        tmp_path = Path(tmp)
        built = build_29snd(tmp_path / "cogs", server.url)
        window = ",".join(map(str, tile_window(built, tile_grid("29SND").transform)))
        scenes = ["fetch", "--tile", "29SND", "--window", window, "--start", "2021-06-01", "--end", "2021-10-31",
                  "--provider", "earth-search", "--stac-url", server.url]
        tile = ["fetch", "--tile", "29RKH", "--start", "2020-02-19", "--end", "2020-02-19",
                "--provider", "earth-search", "--stac-url", server.url]
        for latency in opts.latency:
            server.latency = latency
            for workers in (1, opts.workers):
                server.catalogue = built.catalogue
                report("scenes", latency, workers,
                       measure(server, [*scenes, "--workers", str(workers)], tmp_path / "scenes.nc"))
            if opts.skip_tile:
                continue
            for workers in (1, opts.workers):
                server.catalogue = build_29rkh(server.url)
                report("tile", latency, workers,
                       measure(server, [*tile, "--workers", str(workers)], tmp_path / "tile.nc"))


if __name__ == "__main__":
    main()
