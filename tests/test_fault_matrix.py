"""The fault matrix (issue 11): bad inputs and faults against every command, as a hostile or careless user
would try them, through the CLI.

Every case must end *clean*:

- the documented exit code (README "Exit codes", `vegediff info --exit-codes`), never 1;
- on failure exactly one line on stderr starting ``vegediff: error:``, no traceback, and with
  ``--json`` an error object ``{"error": {"code": ...}}`` on stdout; on success a JSON summary;
- no partial output (``.partial-`` temporaries), no lock file, no output file after a failure;
- no credential from the command line or the server in anything printed;
- where the case says so, a correct result (checked in the case) and a rerun that works.

Real parts only: the loopback STAC server with the real 29SND COGs, real NetCDF files made from
the bundled sample cube, real (tiny, random) weights files, real signals and file-size limits.
The number of cases and how many end clean are in README.md ("Fault matrix").
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from . import fixtures_stac
from .fixtures_stac import FAST, build_29snd, window_29snd
from .forecast_fixtures import edited_weights, write_weights
from .stac_server import Fault, StacServer, wait_for

snd_cog_folder = fixtures_stac.snd_cog_folder
pytestmark = pytest.mark.filterwarnings("ignore:The 'shapely.ops.transform:DeprecationWarning")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SAMPLE = PROJECT_ROOT / "sample_data" / "29SND_2017_sample.nc"  # 128 x 128 px, 30 frames 2017-06-24 .. 11-16
BANDS = ("s2_B02", "s2_B03", "s2_B04", "s2_B8A")
SECRETS = ("s3cretPW", "APIKEY12345", "TOPSECRETSIG")
FORECAST = ("--horizon", "2", "--steps", "1", "--no-cogs", "--quiet")  # seconds per forecast with tiny weights


# --- the shared files ------------------------------------------------------------------------------
@dataclass
class Env:
    root: Path
    weights: Path
    workdir: Path  # template working directory: 29SND/s2_raw.nc and cube.nc (made by prepare)
    bad: dict[str, Path] = field(default_factory=dict)  # name -> damaged copy of the sample cube
    cogs: Path | None = None  # the 29SND COG folder of the loopback server (needs ../shared/data)


def _bad_cubes(folder: Path) -> dict[str, Path]:
    base = xr.open_dataset(SAMPLE).load()
    variants: dict[str, Callable[[xr.Dataset], xr.Dataset]] = {
        "all_nan": lambda d: d.assign({b: d[b] * np.nan for b in BANDS}),
        "all_inf": lambda d: d.assign({b: d[b] * np.inf for b in BANDS}),
        "uint16_dn": lambda d: d.assign({b: (d[b].fillna(0) * 10000).astype("uint16") for b in BANDS}),
        "float_dn": lambda d: d.assign({b: d[b] * 10000 for b in BANDS}),
        "bool_band": lambda d: d.assign(s2_B04=d["s2_B04"] > 0.1),
        "integer_time": lambda d: d.assign_coords(time=np.arange(d.sizes["time"])),
        "transposed": lambda d: d.assign(s2_B04=d["s2_B04"].transpose("x", "y", "time")),
        "no_y": lambda d: d.rename({"y": "row"}),
        "no_nir": lambda d: d.drop_vars("s2_B8A"),
        "cloudy": lambda d: d.assign(s2_SCL=d["s2_SCL"] * 0 + 9),
    }
    out = {}
    for name, change in variants.items():
        out[name] = folder / f"{name}.nc"
        change(base.copy()).to_netcdf(out[name])
    nc3 = base.copy()
    for name in list(nc3.data_vars):
        if nc3[name].dtype == np.uint8:
            nc3[name] = nc3[name].astype("int16")
        nc3[name].encoding = {}
    out["nc3_no_stat"] = folder / "nc3_no_stat.nc"
    nc3.drop_vars("stat").to_netcdf(out["nc3_no_stat"], format="NETCDF3_64BIT")
    data = SAMPLE.read_bytes()
    out["truncated"] = folder / "truncated.nc"
    out["truncated"].write_bytes(data[: len(data) // 3])
    corrupt = bytearray(data)
    for offset in range(len(data) // 3, len(data) // 3 + 200_000, 997):
        corrupt[offset] ^= 0xA5
    out["corrupt_chunk"] = folder / "corrupt_chunk.nc"
    out["corrupt_chunk"].write_bytes(bytes(corrupt))
    import rasterio
    from affine import Affine

    out["geotiff"] = folder / "scene.tif"
    with rasterio.open(out["geotiff"], "w", driver="GTiff", width=8, height=8, count=1, dtype="uint16",
                       crs="EPSG:32629", transform=Affine(20, 0, 0, 0, -20, 0)) as dst:
        dst.write(np.ones((1, 8, 8), dtype="uint16"))
    return out


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Env:
    from vegediff_cli.cli.app import main

    root = tmp_path_factory.mktemp("matrix")
    workdir = root / "template"
    (workdir / "29SND").mkdir(parents=True)
    shutil.copy(SAMPLE, workdir / "29SND" / "s2_raw.nc")
    assert main(["prepare", "--tile", "29SND", "--workdir", str(workdir), "--quiet"]) == 0
    weights = write_weights(root / "tiny.safetensors")
    return Env(root, weights, workdir, _bad_cubes(root))


# --- running a case --------------------------------------------------------------------------------
@dataclass
class Run:
    code: int
    out: str
    err: str
    args: list[str]

    def __repr__(self) -> str:
        return f"Run({' '.join(self.args)!r} -> {self.code}, out={self.out[-300:]!r}, err={self.err[-600:]!r})"


@dataclass
class Ctx:
    env: Env
    folder: Path  # this case's own folder (checked for leftovers)
    cli: Callable[..., Run]
    snd_cogs: Callable[[], Path]

    def workdir(self) -> Path:
        """A fresh copy of the template working directory."""
        target = self.folder / "work"
        shutil.copytree(self.env.workdir, target)
        return target

    def subprocess(self, *args: str, fsize: int | None = None, timeout: float = 240) -> Run:
        """`vegediff ARGS` in a child process (file-size limit `fsize` bytes, SIGXFSZ ignored)."""
        prelude = "import os, resource, signal, sys\n"
        if fsize is not None:
            prelude += (f"signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
                        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({fsize}, {fsize}))\n")
        prelude += "from vegediff_cli.cli.app import main\nsys.exit(main(sys.argv[1:]))\n"
        done = subprocess.run([sys.executable, "-c", prelude, *map(str, args)], capture_output=True, text=True,
                              cwd=PROJECT_ROOT, timeout=timeout)
        return Run(done.returncode, done.stdout, done.stderr, list(map(str, args)))


@dataclass
class Expect:
    code: int
    words: tuple[str, ...] = ()  # in the error line (failure) or on stderr (success)
    absent: tuple[Path, ...] = ()  # must not exist afterwards
    json: bool = True  # the case ran with --json


CASES: dict[str, Callable[[Ctx], tuple[Run, Expect]]] = {}


def case(name: str):
    def register(fn):
        assert name not in CASES, name
        CASES[name] = fn
        return fn

    return register


def check_clean(run: Run, expect: Expect, folder: Path) -> None:
    assert run.code == expect.code, run
    err_lines = [line for line in run.err.splitlines() if line.strip()]
    assert "Traceback" not in run.err and "internal error" not in run.err, run
    if expect.code != 0:
        errors = [line for line in err_lines if line.startswith("vegediff: error:")]
        assert len(errors) == 1, run
        for word in expect.words:
            assert word in errors[0], (word, run)
        if expect.json:
            doc = json.loads(run.out)
            assert doc["error"]["code"] == expect.code and doc["error"]["message"], doc
    else:
        for word in expect.words:
            assert word in run.err or word in run.out, (word, run)
        if expect.json:
            json.loads(run.out)
    for secret in SECRETS:
        assert secret not in run.out and secret not in run.err, (secret, run)
    leftovers = [p for p in folder.rglob("*") if ".partial-" in p.name or p.name.endswith(".lock")]
    assert not leftovers, leftovers
    for path in expect.absent:
        assert not path.exists(), path


@pytest.fixture
def ctx(env: Env, tmp_path: Path, cli, request) -> Ctx:
    def run(*args) -> Run:
        result = cli(*args)
        return Run(result.code, result.out, result.err, list(map(str, args)))

    def snd_cogs() -> Path:
        return request.getfixturevalue("snd_cog_folder")

    return Ctx(env, tmp_path, run, snd_cogs)


# ====================================================================================================
# fetch: a loopback STAC API with the real 29SND COGs (tests/fixtures_stac.py)
# ====================================================================================================
class Served:
    def __init__(self, ctx: Ctx, *, tag: str = "") -> None:
        self.server = StacServer().start()
        self.built = build_29snd(ctx.snd_cogs(), self.server.url, tag=tag)
        self.server.catalogue = self.built.catalogue
        ctx_cleanup.append(self.server.stop)

    @property
    def url(self) -> str:
        return self.server.url

    def item(self, date: str = "2021-06-28") -> dict:
        return next(i for i in self.built.catalogue.items
                    if i["id"] in self.built.kept_ids and i["properties"]["datetime"].startswith(date))


ctx_cleanup: list[Callable[[], None]] = []


@pytest.fixture(autouse=True)
def _stop_servers():
    yield
    while ctx_cleanup:
        ctx_cleanup.pop()()


def fetch(ctx: Ctx, served: Served, *extra: str, url: str | None = None, out: Path | None = None,
          json_out: bool = True) -> tuple[Run, Path]:
    out = out or ctx.folder / "s2_raw.nc"
    args = ["fetch", "--tile", "29SND", "--window", window_29snd(served), "--start", "2021-06-28",
            "--end", "2021-06-28", "--provider", "earth-search", "--stac-url", url or served.url,
            "--output", out, *FAST, *(["--json"] if json_out else []), *extra]
    return ctx.cli(*args), out


def fetch_fault(kind: str, code: int, *words: str, retries: int = 2, **fault):
    def run(ctx: Ctx):
        served = Served(ctx)
        served.server.add_fault(Fault(r"^/search", kind=kind, times=None, **fault))
        result, out = fetch(ctx, served, "--timeout", "1", "--retries", str(retries))
        return result, Expect(code, words, absent=(out,))
    return run


case("fetch: search answers 500 for ever")(fetch_fault("status", 8, "HTTP 500", "tries"))
case("fetch: next link loops back")(lambda c: _next_loop(c))
case("fetch: 1 GiB answer")(fetch_fault("flood", 8, "MiB accepted"))
case("fetch: 1 byte/s drip")(fetch_fault("drip", 8, "took more than", retries=1, seconds=0.5))
case("fetch: redirect loop")(fetch_fault("redirect", 8, "redirects in a loop"))


def _next_loop(ctx: Ctx):
    served = Served(ctx)
    served.server.next_loop = True
    result, out = fetch(ctx, served)
    assert len(served.server.requests("^/search")) <= 3
    return result, Expect(8, ("next link leads back",), absent=(out,))


@case("fetch: 429 with Retry-After, then success")
def _(ctx: Ctx):
    served = Served(ctx)
    served.server.add_fault(Fault(r"^/search", status=429, retry_after=0.2, times=1))
    result, out = fetch(ctx, served)
    assert out.exists()
    return result, Expect(0)


@case("fetch: host name does not resolve (no network)")
def _(ctx: Ctx):
    work = ctx.folder / "work"
    began = time.monotonic()
    result = ctx.cli("fetch", "--tile", "29SND", "--start", "2021-06-28", "--end", "2021-06-28",
                     "--stac-url", "http://stac.vegediff-test.invalid/v1", "--workdir", work, "--json", *FAST)
    assert time.monotonic() - began < 20
    assert result.err.count("cannot resolve") == 1
    return result, Expect(8, ("no network / cannot resolve stac.vegediff-test.invalid",), absent=(work / "29SND",))


@case("fetch: connection refused, api_key in the URL")
def _(ctx: Ctx):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = ctx.folder / "s2_raw.nc"
    result = ctx.cli("fetch", "--tile", "29SND", "--start", "2021-06-28", "--end", "2021-06-28", "--stac-url",
                     f"http://127.0.0.1:{port}/stac?api_key=APIKEY12345", "--output", out, "--json",
                     *FAST)
    return result, Expect(8, ("connection failed",), absent=(out,))


@case("fetch: password in --stac-url, server failing")
def _(ctx: Ctx):
    served = Served(ctx)
    served.server.add_fault(Fault(r"^/search", status=503, times=None))
    result, out = fetch(ctx, served, url=served.url.replace("http://", "http://user:s3cretPW@"))
    return result, Expect(8, ("HTTP 503",), absent=(out,))


@case("fetch: presigned hrefs, COG failing")
def _(ctx: Ctx):
    served = Served(ctx, tag="matrix-signed/")
    for asset in served.item()["assets"].values():
        asset["href"] += "?se=2030-01-01&sp=r&sig=TOPSECRETSIG&X-Amz-Signature=TOPSECRETSIG"
    served.server.add_fault(Fault(r"B04\.tif", status=500, times=None))
    result, out = fetch(ctx, served)
    return result, Expect(8, ("B04.tif", "HTTP 500"), absent=(out,))


@case("fetch: not a STAC API")
def _(ctx: Ctx):
    served = Served(ctx)
    result, out = fetch(ctx, served, url=f"{served.url}/nothing-here")
    return result, Expect(8, ("HTTP 404",), absent=(out,))


@case("fetch: unknown collection")
def _(ctx: Ctx):
    served = Served(ctx)
    result, out = fetch(ctx, served, "--collection", "sentinel-2-l1c")
    return result, Expect(2, ("sentinel-2-l1c",), absent=(out,))


@case("fetch: nothing found")
def _(ctx: Ctx):
    served = Served(ctx)
    out = ctx.folder / "s2_raw.nc"
    result = ctx.cli("fetch", "--tile", "29SND", "--start", "2020-01-01", "--end", "2020-02-01", "--stac-url",
                     served.url, "--output", out, "--json", *FAST)
    return result, Expect(7, ("no Sentinel-2 L2A items",), absent=(out,))


@case("fetch: item with a bad datetime")
def _(ctx: Ctx):
    served = Served(ctx)
    served.item()["properties"]["datetime"] = "2021-13-45T00:00:00Z"
    result, out = fetch(ctx, served)
    return result, Expect(4, ("malformed",), absent=(out,))


@case("fetch: item without a red band")
def _(ctx: Ctx):
    served = Served(ctx)
    del served.item()["assets"]["red"]
    result, out = fetch(ctx, served)
    return result, Expect(5, ("no asset for B04",), absent=(out,))


def href_case(make: Callable[[Path], str], *words: str):
    def run(ctx: Ctx):
        served = Served(ctx)
        href = served.item()["assets"]["red"]["href"]
        local = served.built.catalogue.files / href.split("/files/", 1)[1]
        served.item()["assets"]["red"]["href"] = make(local)
        result, out = fetch(ctx, served)
        assert not [r for r in served.server.log if r.path.endswith(".tif")]
        return result, Expect(4, ("asset red", *words), absent=(out,))
    return run


case("fetch: href file://")(href_case(lambda p: f"file://{p}", "local file"))
case("fetch: href absolute path")(href_case(str, "local file"))
case("fetch: href ../ relative")(href_case(lambda p: f"../../{p.name}", "local file"))
case("fetch: href /vsicurl/")(href_case(lambda p: f"/vsicurl/{p.as_uri()}", "virtual file system"))
case("fetch: href s3://")(href_case(lambda p: "s3://bucket/B04.tif", "s3:// URL"))


@case("fetch: href file:// with --href-schemes file (opt-in)")
def _(ctx: Ctx):
    served = Served(ctx)
    href = served.item()["assets"]["red"]["href"]
    served.item()["assets"]["red"]["href"] = "file://" + str(served.built.catalogue.files / href.split("/files/", 1)[1])
    result, out = fetch(ctx, served, "--href-schemes", "https,http,file")
    assert out.exists()
    return result, Expect(0)


def usage_case(*args: str, code: int = 2, words: tuple[str, ...] = ()):
    def run(ctx: Ctx):
        out = ctx.folder / "out.nc"
        result = ctx.cli(*[str(out) if a == "{out}" else a for a in args], "--json")
        return result, Expect(code, words, absent=(out,))
    return run


FETCH = ("fetch", "--tile", "29SND", "--stac-url", "http://127.0.0.1:9/", "--output", "{out}")
case("fetch: --end before --start")(usage_case(*FETCH, "--start", "2021-08-01", "--end", "2021-07-01",
                                               words=("before --start",)))
case("fetch: --start in the future")(usage_case(*FETCH, "--start", "2999-01-01", words=("in the future",)))
case("fetch: unknown tile")(usage_case("fetch", "--tile", "99XYZ", "--start", "2021-06-01", "--output", "{out}",
                                       words=("99XYZ",)))
case("fetch: --window without --tile")(usage_case("fetch", "--bbox", "8,45,8.1,45.1", "--window", "1,1,5,5",
                                                  "--start", "2021-06-01", words=("--window needs --tile",)))
case("fetch: --timeout nan")(usage_case(*FETCH, "--start", "2021-06-01", "--timeout", "nan", words=("--timeout",)))
case("fetch: --max-cloud nan")(usage_case(*FETCH, "--start", "2021-06-01", "--max-cloud", "nan",
                                          words=("--max-cloud",)))
case("fetch: --href-schemes bogus")(usage_case(*FETCH, "--start", "2021-06-01", "--href-schemes", "ht tp",
                                               words=("--href-schemes",)))
case("fetch: --stac-url ftp://")(usage_case("fetch", "--tile", "29SND", "--start", "2021-06-01", "--stac-url",
                                            "ftp://host/stac", "--output", "{out}", words=("not an http(s) URL",)))
case("fetch: --output x.tif")(usage_case("fetch", "--tile", "29SND", "--start", "2021-06-01", "--stac-url",
                                         "http://127.0.0.1:9/", "--output", "x.tif", words=("not a NetCDF",)))


@case("fetch: --output is an existing folder")
def _(ctx: Ctx):
    served = Served(ctx)
    folder = ctx.folder / "raw"
    folder.mkdir()
    result, _ = fetch(ctx, served, out=folder)
    assert (folder / "s2_raw.nc").is_file()
    return result, Expect(0)


@case("fetch: another run holds the output")
def _(ctx: Ctx):
    from vegediff_cli.atomic import output_lock

    served = Served(ctx)
    out = ctx.folder / "s2_raw.nc"
    with output_lock(out, what="fetched"):
        result, _ = fetch(ctx, served, out=out)
    assert served.server.log == []
    return result, Expect(10, ("another vegediff run",), absent=(out,))


@case("fetch: --bbox alone is named and gridded by the items' tile")
def _(ctx: Ctx):
    served = Served(ctx)
    work = ctx.folder / "work"
    # from the scenes' west edge far into the next MGRS square (29SPD): its centre lies in 29SPD
    result = ctx.cli("fetch", "--bbox", "-8.575,39.277,-6.95,39.301", "--start", "2021-06-28", "--end", "2021-06-28",
                     "--stac-url", served.url, "--workdir", work, "--json", *FAST)
    summary = json.loads(result.out)
    assert summary["tile"] == "29SND" and (work / "29SND" / "s2_raw.nc").is_file(), summary
    assert not (work / "29SPD").exists()
    return result, Expect(0)


@case("fetch: rerun is up to date")
def _(ctx: Ctx):
    served = Served(ctx)
    fetch(ctx, served, json_out=False)
    served.server.reset_log()
    result, _ = fetch(ctx, served)
    assert json.loads(result.out)["up_to_date"] is True
    assert not [r for r in served.server.log if r.path.endswith(".tif")]
    return result, Expect(0)


# ====================================================================================================
# prepare: the bundled sample cube and damaged copies of it
# ====================================================================================================
def prepare_bad(name: str, code: int, *words: str):
    def run(ctx: Ctx):
        out = ctx.folder / "cube.nc"
        result = ctx.cli("prepare", "--input", ctx.env.bad[name], "--output", out, "--json", "--quiet")
        return result, Expect(code, words, absent=(out,))
    return run


case("prepare: input missing")(lambda c: _prepare_missing(c))
case("prepare: truncated NetCDF")(prepare_bad("truncated", 4, "truncated.nc"))
case("prepare: corrupt HDF chunk")(prepare_bad("corrupt_chunk", 4, "corrupt_chunk.nc", "could not be read"))
case("prepare: a GeoTIFF as the cube")(prepare_bad("geotiff", 4, "GeoTIFF"))
case("prepare: no s2_B8A")(prepare_bad("no_nir", 5, "s2_B8A"))
case("prepare: no y dimension")(prepare_bad("no_y", 5, "'y'"))
case("prepare: all clouds")(prepare_bad("cloudy", 7, "no clear observation"))
case("prepare: all-NaN reflectance")(prepare_bad("all_nan", 4, "no finite reflectance"))
case("prepare: infinite reflectance")(prepare_bad("all_inf", 4, "no finite reflectance"))
case("prepare: uint16 digital numbers")(prepare_bad("uint16_dn", 4, "integers", "10000"))
case("prepare: float digital numbers")(prepare_bad("float_dn", 4, "digital numbers"))
case("prepare: boolean band")(prepare_bad("bool_band", 4, "booleans"))
case("prepare: integer time axis")(prepare_bad("integer_time", 4, "not dates"))


def _prepare_missing(ctx: Ctx):
    out = ctx.folder / "cube.nc"
    result = ctx.cli("prepare", "--input", ctx.folder / "nope.nc", "--output", out, "--json")
    return result, Expect(3, ("nope.nc", "does not exist"), absent=(out,))


def prepare_ok(name: str):
    def run(ctx: Ctx):
        out = ctx.folder / "cube.nc"
        result = ctx.cli("prepare", "--input", ctx.env.bad[name], "--output", out, "--json", "--quiet")
        with xr.open_dataset(out) as cube, xr.open_dataset(SAMPLE) as sample:
            assert cube.sizes["y"] == sample.sizes["y"] and cube.sizes["time"] == sample.sizes["time"]
        return result, Expect(0)
    return run


case("prepare: band stored as (x, y, time)")(prepare_ok("transposed"))
case("prepare: NetCDF3 without stat labels")(prepare_ok("nc3_no_stat"))

PREPARE = ("prepare", "--input", str(SAMPLE), "--output", "{out}")
case("prepare: --meteo-layout foo")(usage_case(*PREPARE, "--meteo-layout", "foo", words=("--meteo-layout",)))
case("prepare: --max-meteo-distance -1")(usage_case(*PREPARE, "--max-meteo-distance", "-1",
                                                    words=("--max-meteo-distance",)))
case("prepare: --max-meteo-distance nan")(usage_case(*PREPARE, "--max-meteo-distance", "nan",
                                                     words=("--max-meteo-distance",)))
case("prepare: --clear-classes 99")(usage_case(*PREPARE, "--clear-classes", "99", words=("--clear-classes",)))
case("prepare: --anchor bogus")(usage_case(*PREPARE, "--anchor", "someday", words=("--anchor",)))
case("prepare: --output x.tif")(usage_case("prepare", "--input", str(SAMPLE), "--output", "cube.tif",
                                           words=("not a NetCDF",)))


@case("prepare: --output equals --input")
def _(ctx: Ctx):
    copy = ctx.folder / "cube.nc"
    shutil.copy(SAMPLE, copy)
    before = copy.read_bytes()
    result = ctx.cli("prepare", "--input", copy, "--output", copy, "--json")
    assert copy.read_bytes() == before
    return result, Expect(2, ("would be overwritten",))


@case("prepare: --output is an existing folder")
def _(ctx: Ctx):
    folder = ctx.folder / "out"
    folder.mkdir()
    result = ctx.cli("prepare", "--input", SAMPLE, "--output", folder, "--json", "--quiet")
    assert (folder / "cube.nc").is_file()
    return result, Expect(0)


@case("prepare: non-UTF-8 input path")
def _(ctx: Ctx):
    odd = Path(os.fsdecode(bytes(ctx.folder) + b"/caf\xe9.nc"))
    shutil.copy(SAMPLE, odd)
    result = ctx.cli("prepare", "--input", odd, "--output", ctx.folder / "cube.nc", "--json")
    return result, Expect(2, ("UTF-8",), absent=(ctx.folder / "cube.nc",))


@case("prepare: non-UTF-8 output path")
def _(ctx: Ctx):
    odd = Path(os.fsdecode(bytes(ctx.folder) + b"/s\xe9.nc"))
    result = ctx.cli("prepare", "--input", SAMPLE, "--output", odd, "--json")
    return result, Expect(2, ("UTF-8",), absent=(odd,))


@case("prepare: disk full (file-size limit)")
def _(ctx: Ctx):
    out = ctx.folder / "cube.nc"
    result = ctx.subprocess("prepare", "--input", SAMPLE, "--output", out, "--json", "--quiet", fsize=400_000)
    return result, Expect(10, ("cannot write", "free disk space"), absent=(out,))


@case("prepare: rerun is up to date, --force rebuilds")
def _(ctx: Ctx):
    work = ctx.workdir()
    cube = work / "29SND" / "cube.nc"
    stamp = cube.stat().st_mtime_ns
    result = ctx.cli("prepare", "--tile", "29SND", "--workdir", work, "--json")
    assert json.loads(result.out)["up_to_date"] is True and cube.stat().st_mtime_ns == stamp
    assert "up to date" in result.err
    forced = ctx.cli("prepare", "--tile", "29SND", "--workdir", work, "--force", "--quiet")
    assert forced.code == 0 and cube.stat().st_mtime_ns != stamp
    return result, Expect(0)


@case("prepare: partial files of a killed run are removed")
def _(ctx: Ctx):
    work = ctx.workdir()
    tile = work / "29SND"
    (tile / ".cube.partial-deadbeef.nc").write_bytes(b"half a file")
    (tile / ".cube.nc.lock").write_text("pid 999999")
    result = ctx.cli("prepare", "--tile", "29SND", "--workdir", work, "--json", "--quiet", "--force")
    return result, Expect(0)


@case("prepare: another run holds the output")
def _(ctx: Ctx):
    from vegediff_cli.atomic import output_lock

    out = ctx.folder / "cube.nc"
    with output_lock(out, what="prepared"):
        result = ctx.cli("prepare", "--input", SAMPLE, "--output", out, "--json")
    return result, Expect(10, ("another vegediff run",), absent=(out,))


# ====================================================================================================
# forecast: tiny random weights (real safetensors files), the sample cube
# ====================================================================================================
def weights_variant(ctx: Ctx, *, config=None, metadata=None, tensors=None) -> Path:
    return edited_weights(ctx.env.weights, ctx.folder / "weights.safetensors", config=config, metadata=metadata,
                          tensors=tensors)


def forecast_with(weights: Callable[[Ctx], Path] | None, code: int, *words: str, cube: str | None = None,
                  extra: tuple[str, ...] = ()):
    def run(ctx: Ctx):
        out = ctx.folder / "forecast.nc"
        chosen = weights(ctx) if weights else ctx.env.weights
        source = ctx.env.bad[cube] if cube else SAMPLE
        result = ctx.cli("forecast", "--input", source, "--weights", chosen, "--output", out, *FORECAST, *extra,
                         "--json")
        return result, Expect(code, words, absent=(out,) if code else ())
    return run


case("forecast: weights missing")(forecast_with(lambda c: c.folder / "none.safetensors", 3, "does not exist"))
case("forecast: not a weights file")(forecast_with(lambda c: Path(shutil.copy(SAMPLE, c.folder / "w.safetensors")),
                                                   9, "not a readable weights file"))
case("forecast: weights declare a huge model")(forecast_with(
    lambda c: weights_variant(c, config={"vegenet.hidden": 262144, "vegenet.heads": 64, "vegenet.depth": 48}),
    9, "billion parameters"))
case("forecast: weights declare hidden -1")(forecast_with(
    lambda c: weights_variant(c, config={"vegenet.hidden": -1}), 9, "impossible model"))
case("forecast: NaN weights")(forecast_with(
    lambda c: weights_variant(c, tensors=lambda d: next(v.fill_(float("nan")) for v in d.values()
                                                        if v.dtype.is_floating_point)), 9, "NaN"))
case("forecast: weights of the wrong shape")(forecast_with(
    lambda c: weights_variant(c, tensors=lambda d: d.update({k: v[..., :1].contiguous() for k, v in list(d.items())
                                                             if v.ndim == 4})), 9, "do not fit"))
case("forecast: malformed weights metadata")(forecast_with(
    lambda c: weights_variant(c, metadata={"meteo_coverage": "{broken"}), 9, "malformed metadata"))
case("forecast: all-NaN reflectance")(forecast_with(None, 4, "no finite reflectance", cube="all_nan"))
case("forecast: float digital numbers")(forecast_with(None, 4, "digital numbers", cube="float_dn"))
case("forecast: integer time axis")(forecast_with(None, 4, "not dates", cube="integer_time"))
case("forecast: NetCDF3 without stat labels")(forecast_with(None, 0, cube="nc3_no_stat"))
case("forecast: band stored as (x, y, time)")(forecast_with(None, 0, cube="transposed"))
case("forecast: --members 100000")(forecast_with(None, 2, "--members 100000", "--memory-mb",
                                                 extra=("--members", "100000")))
case("forecast: --members 400 within --memory-mb 64")(forecast_with(None, 2, "raise --memory-mb",
                                                                     extra=("--members", "400", "--memory-mb", "64")))
case("forecast: --guidance nan")(forecast_with(None, 2, "--guidance", extra=("--guidance", "nan")))
case("forecast: --guidance inf")(forecast_with(None, 2, "--guidance", extra=("--guidance", "inf")))
case("forecast: --seed 2**70")(forecast_with(None, 2, "--seed", extra=("--seed", str(2**70))))
case("forecast: --seed -1")(forecast_with(None, 2, "--seed", extra=("--seed", "-1")))
case("forecast: --horizon 99")(forecast_with(None, 2, "--horizon 99", extra=("--horizon", "99")))
case("forecast: --start not a date")(forecast_with(None, 2, "--start", extra=("--start", "May 40th")))
case("forecast: --precision fp16")(forecast_with(None, 2, "--precision", extra=("--precision", "fp16")))


@case("forecast: --output equals --input")
def _(ctx: Ctx):
    copy = ctx.folder / "cube.nc"
    shutil.copy(SAMPLE, copy)
    before = copy.read_bytes()
    result = ctx.cli("forecast", "--input", copy, "--weights", ctx.env.weights, "--output", copy, *FORECAST, "--json")
    assert copy.read_bytes() == before
    return result, Expect(2, ("would be overwritten",))


case("forecast: --output x.tif")(usage_case("forecast", "--input", str(SAMPLE), "--output", "f.tif",
                                            words=("not a NetCDF",)))


@case("forecast: --output is an existing folder")
def _(ctx: Ctx):
    folder = ctx.folder / "out"
    folder.mkdir()
    result = ctx.cli("forecast", "--input", SAMPLE, "--weights", ctx.env.weights, "--output", folder, *FORECAST,
                     "--json")
    assert (folder / "forecast.nc").is_file()
    return result, Expect(0)


@case("forecast: disk full (file-size limit)")
def _(ctx: Ctx):
    out = ctx.folder / "forecast.nc"
    result = ctx.subprocess("forecast", "--input", SAMPLE, "--weights", ctx.env.weights, "--output", out,
                            *FORECAST, "--members", "4", "--json", fsize=60_000)
    return result, Expect(10, ("cannot write",), absent=(out,))


@case("forecast: SIGKILL mid-run, then a rerun")
def _(ctx: Ctx):
    out = ctx.folder / "forecast.nc"
    args = ["forecast", "--input", SAMPLE, "--weights", ctx.env.weights, "--output", out, "--horizon", "20",
            "--steps", "20", "--members", "8", "--quiet"]
    child = subprocess.Popen([sys.executable, "-m", "vegediff_cli", *map(str, args)], cwd=PROJECT_ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: any(".partial-" in p.name for p in ctx.folder.iterdir()), timeout=120)
    finally:
        child.kill()
        child.wait()
    assert any(".partial-" in p.name for p in ctx.folder.iterdir())  # what SIGKILL leaves behind
    result = ctx.cli("forecast", "--input", SAMPLE, "--weights", ctx.env.weights, "--output", out, *FORECAST, "--json")
    assert out.is_file()
    return result, Expect(0)


@case("forecast: rerun is up to date, --force redoes it")
def _(ctx: Ctx):
    work = ctx.workdir()
    args = ("forecast", "--tile", "29SND", "--workdir", work, "--weights", ctx.env.weights, *FORECAST)
    assert ctx.cli(*args).code == 0
    output = work / "29SND" / "forecast.nc"
    stamp = output.stat().st_mtime_ns
    result = ctx.cli(*[a for a in args if a != "--quiet"], "--json")
    assert json.loads(result.out)["up_to_date"] is True and output.stat().st_mtime_ns == stamp
    assert "is up to date" in result.err and len(result.err.strip().splitlines()) == 1  # one line for cron logs
    changed = ctx.cli(*args, "--seed", "5")
    assert changed.code == 0 and output.stat().st_mtime_ns != stamp  # another setting: run again
    stamp = output.stat().st_mtime_ns
    assert ctx.cli(*args, "--seed", "5", "--force").code == 0 and output.stat().st_mtime_ns != stamp
    return result, Expect(0)


@case("forecast: cube older than a re-fetched s2_raw.nc")
def _(ctx: Ctx):
    work = ctx.workdir()
    raw = work / "29SND" / "s2_raw.nc"
    refetched = xr.open_dataset(raw).load()
    refetched.attrs["vegediff_product_id"] = "a-new-fetch"
    raw.unlink()
    refetched.to_netcdf(raw)
    result = ctx.cli("forecast", "--tile", "29SND", "--workdir", work, "--weights", ctx.env.weights, *FORECAST,
                     "--json")
    return result, Expect(11, ("vegediff prepare --tile 29SND",), absent=(work / "29SND" / "forecast.nc",))


@case("forecast: a new forecast replaces its COGs and ensemble together")
def _(ctx: Ctx):
    work = ctx.workdir()
    tile = work / "29SND"
    base = ("--tile", "29SND", "--workdir", work, "--weights", ctx.env.weights, "--horizon", "2", "--steps", "1",
            "--quiet")
    assert ctx.cli("ensemble", *base, "--members", "2", "--start", "2017-11-06").code == 0
    assert (tile / "ensemble.nc").is_file() and any((tile / "forecast_cogs").iterdir())
    result = ctx.cli("forecast", *base, "--json")  # default start 2017-11-21: another forecast
    assert not (tile / "ensemble.nc").exists() and not (tile / "ensemble_cogs").exists()
    # the new forecast's COGs only (beside them: the observed context frames, forecast.qgs and styles/)
    cogs = sorted(p.name for p in (tile / "forecast_cogs").glob("ndvi_pred_*.tif"))
    assert cogs == ["ndvi_pred_2017-11-21.tif", "ndvi_pred_2017-11-26.tif"], cogs
    history = tile / "history" / "2017-11-06"
    assert (history / "forecast.nc").is_file() and (history / "ensemble.nc").is_file()
    return result, Expect(0)


@case("forecast: --debug after the command")
def _(ctx: Ctx):
    out = ctx.folder / "forecast.nc"
    result = ctx.cli("forecast", "--input", ctx.folder / "nope.nc", "--output", out, "--debug")
    assert "Traceback" in result.err
    result.err = "\n".join(line for line in result.err.splitlines() if line.startswith("vegediff:"))
    return result, Expect(3, ("nope.nc",), absent=(out,), json=False)


# ====================================================================================================
# ensemble and evaluate on a working directory
# ====================================================================================================
@case("ensemble: --members 1")
def _(ctx: Ctx):
    work = ctx.workdir()
    result = ctx.cli("ensemble", "--tile", "29SND", "--workdir", work, "--members", "1", "--json")
    return result, Expect(2, ("--members 1",), absent=(work / "29SND" / "ensemble.nc",))


case("ensemble: --below 2")(lambda c: _ensemble_levels(c, "--below", "2"))
case("ensemble: --drop nan")(lambda c: _ensemble_levels(c, "--drop", "nan"))


def _ensemble_levels(ctx: Ctx, option: str, value: str):
    work = ctx.workdir()
    assert ctx.cli("forecast", "--tile", "29SND", "--workdir", work, "--weights", ctx.env.weights, *FORECAST,
                   "--members", "2").code == 0
    result = ctx.cli("ensemble", "--tile", "29SND", "--workdir", work, option, value, "--json")
    return result, Expect(2, (option,), absent=(work / "29SND" / "ensemble.nc",))


@case("ensemble: --output equals its forecast --input")
def _(ctx: Ctx):
    out = ctx.folder / "forecast.nc"
    assert ctx.cli("forecast", "--input", SAMPLE, "--weights", ctx.env.weights, "--output", out, *FORECAST,
                   "--members", "2").code == 0
    before = out.read_bytes()
    result = ctx.cli("ensemble", "--input", out, "--output", out, "--json")
    assert out.read_bytes() == before
    return result, Expect(2, ("would be overwritten",))


case("ensemble: --output x.tif")(usage_case("ensemble", "--input", str(SAMPLE), "--output", "e.tif",
                                            words=("not a NetCDF",)))


@case("ensemble: disk full (file-size limit)")
def _(ctx: Ctx):
    forecast = ctx.folder / "forecast.nc"
    assert ctx.cli("forecast", "--input", SAMPLE, "--weights", ctx.env.weights, "--output", forecast, *FORECAST,
                   "--members", "2").code == 0
    out = ctx.folder / "ensemble.nc"
    limit = forecast.stat().st_size + 1  # the forecast stays readable; the ensemble cannot be written
    result = ctx.subprocess("ensemble", "--input", forecast, "--output", out, "--no-cogs", "--json", "--quiet",
                            fsize=limit // 4)
    return result, Expect(10, ("cannot write",), absent=(out,))


@case("ensemble: --output is an existing folder")
def _(ctx: Ctx):
    forecast = ctx.folder / "forecast.nc"
    assert ctx.cli("forecast", "--input", SAMPLE, "--weights", ctx.env.weights, "--output", forecast, *FORECAST,
                   "--members", "2").code == 0
    folder = ctx.folder / "out"
    folder.mkdir()
    result = ctx.cli("ensemble", "--input", forecast, "--output", folder, "--no-cogs", "--json", "--quiet")
    assert (folder / "ensemble.nc").is_file()
    return result, Expect(0)


@case("ensemble: rerun is up to date")
def _(ctx: Ctx):
    work = ctx.workdir()
    args = ("ensemble", "--tile", "29SND", "--workdir", work, "--weights", ctx.env.weights, "--members", "2",
            "--horizon", "2", "--steps", "1", "--quiet")
    assert ctx.cli(*args).code == 0
    stamp = (work / "29SND" / "ensemble.nc").stat().st_mtime_ns
    result = ctx.cli(*args, "--json")
    assert json.loads(result.out)["up_to_date"] is True
    assert (work / "29SND" / "ensemble.nc").stat().st_mtime_ns == stamp
    return result, Expect(0)


@case("evaluate: forecast into the future (cron) is not an error")
def _(ctx: Ctx):
    work = ctx.workdir()
    assert ctx.cli("forecast", "--tile", "29SND", "--workdir", work, "--weights", ctx.env.weights, *FORECAST).code == 0
    result = ctx.cli("evaluate", "--tile", "29SND", "--workdir", work, "--json")
    status = json.loads(result.out)
    assert status["status"] == "nothing_scorable" and status["cube_last_date"] == "2017-11-16", status
    assert not (work / "29SND" / "evaluation").exists()
    return result, Expect(0, ("nothing to score yet",))


@case("evaluate: the latest forecast whose dates are observed")
def _(ctx: Ctx):
    work = ctx.workdir()
    base = ("forecast", "--tile", "29SND", "--workdir", work, "--weights", ctx.env.weights, "--steps", "1",
            "--no-cogs", "--quiet")
    assert ctx.cli(*base, "--start", "2017-11-06", "--horizon", "6").code == 0  # 3 dates observed, 3 in the future
    assert ctx.cli(*base, "--horizon", "2").code == 0  # tonight's forecast: all in the future
    result = ctx.cli("evaluate", "--tile", "29SND", "--workdir", work, "--pixels", "all-valid", "--no-plots", "--json")
    report = json.loads(result.out)
    assert report["status"] == "scored" and report["forecast_file"].endswith("history/2017-11-06/forecast.nc")
    assert report["dates_scored"] == ["2017-11-06", "2017-11-11", "2017-11-16"], report
    assert report["forecasts"]["forecast"]["headline"]["n_pixels"] > 0
    return result, Expect(0)


@case("evaluate: ensemble made from another forecast")
def _(ctx: Ctx):
    work = ctx.workdir()
    tile = work / "29SND"
    base = ("--tile", "29SND", "--workdir", work, "--weights", ctx.env.weights, "--steps", "1", "--quiet")
    assert ctx.cli("ensemble", *base, "--members", "2", "--horizon", "2", "--start", "2017-11-06").code == 0
    keep = ctx.folder / "old_ensemble.nc"
    shutil.copy(tile / "ensemble.nc", keep)
    assert ctx.cli("forecast", *base, "--members", "2", "--horizon", "2", "--start", "2017-11-11", "--seed",
                   "3").code == 0
    shutil.copy(keep, tile / "ensemble.nc")  # a stale ensemble.nc put back by hand
    result = ctx.cli("evaluate", "--tile", "29SND", "--workdir", work, "--pixels", "all-valid", "--json")
    return result, Expect(11, ("made from another forecast", "vegediff ensemble --tile 29SND"),
                          absent=(tile / "evaluation",))


@case("evaluate: output folder not writable")
def _(ctx: Ctx):
    work = ctx.workdir()
    assert ctx.cli("forecast", "--tile", "29SND", "--workdir", work, "--weights", ctx.env.weights, *FORECAST,
                   "--start", "2017-11-06").code == 0
    if os.geteuid() == 0:  # root ignores permissions: sysfs refuses everyone
        target = Path("/sys/vegediff-evaluation")
    else:
        locked = ctx.folder / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        target = locked / "evaluation"
    result = ctx.cli("evaluate", "--tile", "29SND", "--workdir", work, "--output", target, "--pixels", "all-valid",
                     "--json")
    return result, Expect(10, ("cannot",), absent=(target,))


@case("evaluate: --output is a file")
def _(ctx: Ctx):
    work = ctx.workdir()
    target = work / "29SND" / "cube.nc"
    before = target.read_bytes()
    result = ctx.cli("evaluate", "--input", target, "--forecast", target, "--output", target, "--json")
    assert target.read_bytes() == before
    return result, Expect(2, ("is a file",))


case("evaluate: --seed 2**70")(usage_case("evaluate", "--input", str(SAMPLE), "--forecast", str(SAMPLE), "--output",
                                          "{out}", "--seed", str(2**70), words=("--seed",)))
case("evaluate: --jobs 0")(usage_case("evaluate", "--input", str(SAMPLE), "--forecast", str(SAMPLE), "--output",
                                      "{out}", "--jobs", "0", words=("--jobs",)))


# ====================================================================================================
# info, train and the CLI itself
# ====================================================================================================
@case("info: --step forecast and ensemble")
def _(ctx: Ctx):
    work = ctx.workdir()
    assert ctx.cli("ensemble", "--tile", "29SND", "--workdir", work, "--weights", ctx.env.weights, "--members", "2",
                   "--horizon", "2", "--steps", "1", "--no-cogs", "--quiet").code == 0
    forecast = ctx.cli("info", "--tile", "29SND", "--workdir", work, "--step", "forecast", "--json")
    assert json.loads(forecast.out)["product"] == "forecast" and json.loads(forecast.out)["shape"]["member"] == 2
    result = ctx.cli("info", "--tile", "29SND", "--workdir", work, "--step", "ensemble", "--json")
    assert json.loads(result.out)["product"] == "ensemble"
    return result, Expect(0)


case("info: --step bogus")(usage_case("info", "--tile", "29SND", "--step", "bogus", words=("--step",)))
case("info: missing file")(usage_case("info", "/nonexistent/cube.nc", code=3, words=("does not exist",)))
case("info: minicube declaring gigabytes")(lambda c: _info_huge(c))


def _info_huge(ctx: Ctx):
    from .test_security_resources import compressible_cube

    path = compressible_cube(ctx.folder / "minicube.nc", frames=64, side=4096, minicube=True)
    return ctx.cli("info", path, "--json"), Expect(4, ("GiB of data once decompressed",))


@case("train: crafted checkpoint in --run-dir")
def _(ctx: Ctx):
    from .test_security_checkpoint import malicious_checkpoint

    marker = ctx.folder / "pwned"
    run_dir = ctx.folder / "run"
    run_dir.mkdir()
    malicious_checkpoint(run_dir / "vae.ckpt", marker)
    out = ctx.folder / "w.safetensors"
    result = ctx.cli("train", "vae", "--data", SAMPLE, "--preset", "tiny", "--steps", "1", "--crop", "32",
                     "--batch", "2", "--run-dir", run_dir, "--output", out, "--quiet", "--json")
    assert not marker.exists()
    return result, Expect(4, ("vae.ckpt",), absent=(out, marker))


case("train: --lr nan")(usage_case("train", "diffusion", "--data", str(SAMPLE), "--init", str(SAMPLE), "--output",
                                   "{out}", "--lr", "nan", words=("--lr",)))
case("train: --seed 2**70")(usage_case("train", "vae", "--data", str(SAMPLE), "--output", "{out}", "--seed",
                                       str(2**70), words=("--seed",)))
case("cli: unknown option")(usage_case("forecast", "--no-such-option", words=("--no-such-option",)))


@case("cli: SIGTERM during start-up")
def _(ctx: Ctx):
    with StacServer() as server:
        server.add_fault(Fault(r"", kind="stall", seconds=60, times=None))
        args = ["fetch", "--tile", "29SND", "--start", "2021-06-28", "--end", "2021-06-28", "--stac-url", server.url,
                "--output", str(ctx.folder / "s2_raw.nc"), "--json"]
        child = subprocess.Popen([sys.executable, "-m", "vegediff_cli", *args], cwd=PROJECT_ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        def handles_sigterm() -> bool:  # the handler is installed: SIGTERM (15) is in SigCgt
            try:
                status = Path(f"/proc/{child.pid}/status").read_text()
            except OSError:
                return False
            mask = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt")), 16)
            return bool(mask & (1 << (signal.SIGTERM - 1)))

        assert wait_for(handles_sigterm, timeout=60, interval=0.001)
        maps = Path(f"/proc/{child.pid}/maps").read_text()
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=60)
    assert "libtorch" not in maps  # the signal arrived during start-up, before the heavy imports
    return Run(child.returncode, out, err, args), Expect(130, ("interrupted",), json=False)


@pytest.mark.parametrize("name", list(CASES))  # after every case above is registered
def test_fault_matrix(ctx: Ctx, name: str):
    run, expect = CASES[name](ctx)
    check_clean(run, expect, ctx.folder)


def test_matrix_size_matches_the_readme():
    """README.md states the matrix size; keep it true."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert f"{len(CASES)} cases" in readme, len(CASES)


def test_readme_exit_code_table_is_the_codes():
    from vegediff_cli.errors import EXIT_CODES

    readme = (PROJECT_ROOT / "README.md").read_text()
    for code in EXIT_CODES:
        if code == 1:
            continue  # the README explains it in more words
        assert f"| {code} |" in readme, code

