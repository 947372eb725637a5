"""Hostile STAC APIs (issue 11, security): local-file hrefs, leaked credentials, endless or huge answers.

Every case uses the real loopback STAC server (tests/stac_server.py) with crafted items or
misbehaviour, and the CLI as a user runs it.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
import xarray as xr

from vegediff_cli.errors import CorruptInputError, RemoteError
from vegediff_cli.sources.hrefs import check_href, parse_schemes
from vegediff_cli.sources.http import RetryPolicy
from vegediff_cli.sources.stac import RetryingStacIO

from . import fixtures_stac
from .fixtures_stac import FAST, Served, assert_matches_source, build_29snd, window_29snd
from .stac_server import Fault, StacServer

served_29snd = fixtures_stac.served_29snd
snd_cog_folder = fixtures_stac.snd_cog_folder

pytestmark = pytest.mark.filterwarnings("ignore:The 'shapely.ops.transform:DeprecationWarning")
DATE = "2021-06-28"


def fetch(cli, url: str, served: Served, out: Path, *extra: str):
    return cli("fetch", "--tile", "29SND", "--window", window_29snd(served), "--start", DATE, "--end", DATE,
               "--provider", "earth-search", "--stac-url", url, "--output", out, *FAST, *extra)


def kept_item(served: Served) -> dict:
    return next(i for i in served.built.catalogue.items
                if i["id"] in served.built.kept_ids and i["properties"]["datetime"].startswith(DATE))


def one_error_line(result) -> str:
    lines = [line for line in result.err.splitlines() if line.startswith("vegediff:")]
    assert len(lines) == 1, result.err
    return lines[0]


# --- asset hrefs: only http(s) unless the user opts in ------------------------------------------
def _local_cog(served: Served) -> Path:
    href = kept_item(served)["assets"]["red"]["href"]
    return served.built.catalogue.files / href.split("/files/", 1)[1]


HOSTILE_HREFS = {
    "file URL": lambda cog: f"file://{cog}",
    "absolute path": lambda cog: str(cog),
    "relative path": lambda cog: f"../../{cog.name}",
    "vsi prefix": lambda cog: f"/vsicurl/{cog.as_uri()}",
    "vsizip": lambda cog: f"/vsizip/{cog.parent}/x.zip/{cog.name}",
    "s3 URL": lambda cog: "s3://sentinel-cogs/sentinel-s2-l2a-cogs/29/S/ND/B04.tif",
}


@pytest.mark.parametrize("kind", list(HOSTILE_HREFS))
def test_item_href_to_a_local_file_is_refused(cli, served_29snd: Served, tmp_path: Path, kind: str):
    """The attack: an item whose B04 href names a local file (here a readable COG, so without the
    check the fetch would succeed with local pixels); it must end in exit 4 before any read."""
    cog = _local_cog(served_29snd)
    kept_item(served_29snd)["assets"]["red"]["href"] = HOSTILE_HREFS[kind](cog)
    out = tmp_path / "s2_raw.nc"
    result = fetch(cli, served_29snd.url, served_29snd, out)
    assert result.code == CorruptInputError.exit_code, result
    line = one_error_line(result)
    assert "asset red" in line and ("--href-schemes" in line or "virtual file system" in line)
    assert not out.exists()
    assert not [r for r in served_29snd.server.log if r.path.endswith(".tif")]  # nothing was read at all


def test_local_hrefs_are_read_when_the_user_opts_in(cli, served_29snd: Served, tmp_path: Path):
    """`--href-schemes https,http,file` (a trusted local catalogue): the same item then fetches,
    pixel for pixel what the file holds."""
    cog = _local_cog(served_29snd)
    kept_item(served_29snd)["assets"]["red"]["href"] = f"file://{cog}"
    out = tmp_path / "s2_raw.nc"
    result = fetch(cli, served_29snd.url, served_29snd, out, "--href-schemes", "https,http,file")
    assert result.code == 0, result
    with xr.open_dataset(out) as cube:
        assert assert_matches_source(cube, served_29snd.built, dates=[DATE]) > 0


def test_relative_href_resolves_against_the_items_own_url(served_29snd: Served):
    base = f"{served_29snd.url}/collections/sentinel-2-l2a/items/X"
    assert check_href("../../files/a/B04.tif", base=base, what="item X") == f"{served_29snd.url}/collections/files/a/B04.tif"
    with pytest.raises(CorruptInputError, match="local file"):
        check_href("../../files/a/B04.tif", base=None, what="item X")


@pytest.mark.parametrize("text", ["", "https,,vsicurl", "ht tp", "file;rm"])
def test_bad_href_scheme_lists_are_usage_errors(text: str):
    with pytest.raises(Exception, match="`href_schemes`"):
        parse_schemes(text)


def test_static_layer_item_pointing_to_a_local_file_is_refused(cli, jas_cube: Path, tmp_path: Path):
    from .test_prepare import SCENE_DIR  # noqa: F401  (the real scenes: skip cleanly without shared data)
    from .test_prepare_static import static_catalogue

    with StacServer() as server:
        server.catalogue = static_catalogue(tmp_path / "cogs", server.url, jas_cube)
        for item in server.catalogue.items:
            for asset in item["assets"].values():
                asset["href"] = "file://" + str(tmp_path / "cogs" / asset["href"].rsplit("/", 1)[1])
        out = tmp_path / "cube.nc"
        result = cli("prepare", "--input", jas_cube, "--static-stac-url", server.url, "--output", out)
        assert result.code == CorruptInputError.exit_code, result
        assert "--href-schemes" in one_error_line(result)
        assert not out.exists()


# --- credentials never printed ---------------------------------------------------------------
SECRETS = ("s3cretPW", "TOPSECRETSIG", "APIKEY12345")


def assert_no_secret(result, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in result.out and secret not in result.err, (secret, result)


def test_password_in_stac_url_is_never_printed(cli, served_29snd: Served, tmp_path: Path):
    served_29snd.server.add_fault(Fault(r"^/search", status=500, times=None))
    url = served_29snd.url.replace("http://", "http://user:s3cretPW@")
    out = tmp_path / "s2_raw.nc"
    for flags in ((), ("--json",)):
        result = fetch(cli, url, served_29snd, out, *flags)
        assert result.code == RemoteError.exit_code, result
        assert "HTTP 500" in one_error_line(result)
        assert_no_secret(result, "s3cretPW")
    debug = cli("--debug", "fetch", "--tile", "29SND", "--window", window_29snd(served_29snd), "--start", DATE,
                "--end", DATE, "--stac-url", url, "--output", out, *FAST)
    assert "Traceback" in debug.err
    assert_no_secret(debug, "s3cretPW")


def test_presigned_hrefs_are_never_printed(cli, served_29snd: Served, tmp_path: Path):
    item = kept_item(served_29snd)
    for asset in item["assets"].values():
        asset["href"] += "?se=2030-01-01&sp=r&sv=2021-06-08&sig=TOPSECRETSIG&X-Amz-Signature=TOPSECRETSIG"
    served_29snd.server.add_fault(Fault(r"B04\.tif", status=500, times=None))
    out = tmp_path / "s2_raw.nc"
    result = fetch(cli, served_29snd.url, served_29snd, out, "--json")
    assert result.code == RemoteError.exit_code, result
    assert "B04.tif" in one_error_line(result)
    assert_no_secret(result, "TOPSECRETSIG")
    debug = cli("--debug", "fetch", "--tile", "29SND", "--window", window_29snd(served_29snd), "--start", DATE,
                "--end", DATE, "--stac-url", served_29snd.url, "--output", out, *FAST)
    assert debug.code == RemoteError.exit_code
    assert_no_secret(debug, "TOPSECRETSIG")


def test_api_key_of_an_unreachable_server_is_never_printed(cli, served_29snd: Served, tmp_path: Path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "s2_raw.nc"
    result = fetch(cli, f"http://127.0.0.1:{port}/stac?api_key=APIKEY12345", served_29snd, out, "--debug")
    assert result.code == RemoteError.exit_code, result
    assert "connection failed" in result.err
    assert_no_secret(result, "APIKEY12345")


def test_sas_tokens_are_never_printed_under_debug(cli, snd_cog_folder: Path, tmp_path: Path):
    """Planetary Computer signing: the token endpoint's `sig=` must not appear when a signed read fails."""
    with StacServer() as server:
        built = build_29snd(snd_cog_folder, server.url, tag="sas-redact/", pc_style=True, blob=("pcstore", "sentinel2"))
        server.catalogue = built.catalogue
        server.add_fault(Fault(r"B8A\.tif", status=500, times=None))
        out = tmp_path / "s2_raw.nc"
        result = cli("--debug", "fetch", "--provider", "planetary-computer", "--stac-url", server.url,
                     "--sas-url", f"{server.url}/api/sas/v1/token", "--tile", "29SND",
                     "--window", window_29snd(Served(server, built)), "--start", DATE, "--end", DATE,
                     "--output", out, *FAST)
        assert result.code == RemoteError.exit_code, result
        assert server.tokens_issued >= 1
        assert "sig=loopback" not in result.err and "sig=loopback" not in result.out
        assert "B8A.tif" in result.err


def test_dry_run_and_output_file_hold_no_credentials(cli, served_29snd: Served, tmp_path: Path):
    url = served_29snd.url.replace("http://", "http://user:s3cretPW@") + "/?token=APIKEY12345"
    dry = cli("fetch", "--tile", "29SND", "--start", DATE, "--end", DATE, "--stac-url", url, "--dry-run", *FAST)
    assert dry.code == 0, dry
    assert_no_secret(dry, "s3cretPW", "APIKEY12345")
    out = tmp_path / "s2_raw.nc"
    result = fetch(cli, url, served_29snd, out, "--json")
    assert result.code == 0, result
    assert_no_secret(result, "s3cretPW", "APIKEY12345")
    with xr.open_dataset(out) as cube:
        text = json.dumps({k: str(v) for k, v in cube.attrs.items()})
    assert "s3cretPW" not in text and "APIKEY12345" not in text


# --- bounded answers ---------------------------------------------------------------------------
def test_next_link_loop_ends_quickly(cli, served_29snd: Served, tmp_path: Path):
    served_29snd.server.next_loop = True
    out = tmp_path / "s2_raw.nc"
    began = time.monotonic()
    result = fetch(cli, served_29snd.url, served_29snd, out)
    assert result.code == RemoteError.exit_code, result
    assert "next link leads back" in one_error_line(result)
    assert len(served_29snd.server.requests("^/search")) <= 3
    assert time.monotonic() - began < 30
    assert not out.exists()


def test_too_many_pages_end_the_search(served_29snd: Served):
    from pystac_client import Client

    io = RetryingStacIO(RetryPolicy(attempts=1, timeout=2), max_pages=2)
    client = Client.open(served_29snd.url, stac_io=io)
    search = client.search(collections=["sentinel-2-l2a"], limit=1, method="GET")
    with pytest.raises(RemoteError, match="more than 2 pages"):
        list(search.items())
    assert len(served_29snd.server.requests("^/search")) == 3


def test_request_modifiers_given_through_the_public_api_reach_every_request(served_29snd: Served):
    from pystac_client import Client

    def tag(name: str):
        def modify(request):
            request.params = {**(request.params or {}), name: "1"}
            return request
        return modify

    policy = RetryPolicy(attempts=1, timeout=2)
    client = Client.open(served_29snd.url, stac_io=RetryingStacIO(policy), request_modifier=tag("viaopen"))
    list(client.search(collections=["sentinel-2-l2a"], limit=1, max_items=1, method="GET").items())
    client = Client.open(served_29snd.url, stac_io=RetryingStacIO(policy, request_modifier=tag("viaio")))
    list(client.search(collections=["sentinel-2-l2a"], limit=1, max_items=1, method="GET").items())
    searches = [r.path for r in served_29snd.server.requests("^/search")]
    assert len(searches) == 2 and "viaopen=1" in searches[0] and "viaio=1" in searches[1]


def test_one_gib_answer_is_refused_without_reading_it(cli, served_29snd: Served, tmp_path: Path):
    served_29snd.server.add_fault(Fault(r"^/search", kind="flood", times=None))
    out = tmp_path / "s2_raw.nc"
    result = fetch(cli, served_29snd.url, served_29snd, out)
    assert result.code == RemoteError.exit_code, result
    assert "MiB accepted" in one_error_line(result)
    assert len(served_29snd.server.requests("^/search")) == 1  # never retried


@pytest.mark.slow
def test_one_byte_per_second_drip_runs_out_of_time(cli, served_29snd: Served, tmp_path: Path):
    served_29snd.server.add_fault(Fault(r"^/search", kind="drip", seconds=0.5, times=None))
    out = tmp_path / "s2_raw.nc"
    began = time.monotonic()
    result = fetch(cli, served_29snd.url, served_29snd, out, "--timeout", "1", "--retries", "2")
    took = time.monotonic() - began
    assert result.code == RemoteError.exit_code, result
    assert "took more than" in one_error_line(result)
    assert took < 30, took  # 2 tries of at most 5 x timeout + connect timeout each, and one back-off


def test_redirect_loop_is_a_remote_error(cli, served_29snd: Served, tmp_path: Path):
    served_29snd.server.add_fault(Fault(r"^/search", kind="redirect", times=None))
    out = tmp_path / "s2_raw.nc"
    result = fetch(cli, served_29snd.url, served_29snd, out, "--json")
    assert result.code == RemoteError.exit_code, result
    assert "redirects in a loop" in one_error_line(result)
