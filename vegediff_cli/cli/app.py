"""The `vegediff` command: a Typer app, and the one place that turns errors into exit codes."""

from __future__ import annotations

import logging
import os
import signal
import sys

import click
import typer

from .. import __version__
from ..errors import RunInterrupted, VegediffError
from ..pipeline.forecast_runtime import configure_process
from . import ensemble, evaluate, fetch, forecast, info, prepare, train

HELP = """Forecast vegetation (NDVI and Sentinel-2 reflectance) with the VegeDiff latent diffusion model.

Typical run for one Sentinel-2 tile, each step reading the previous step's files:

  vegediff fetch --tile 32UQD --start 2024-03-01 --end 2024-09-30

  vegediff prepare --tile 32UQD --era5 era5.nc

  vegediff forecast --tile 32UQD --horizon 20

  vegediff ensemble --tile 32UQD --members 16

  vegediff evaluate --tile 32UQD

Every step also takes explicit --input/--output paths. Outputs are NetCDF (CF, with CRS) and Cloud-Optimized GeoTIFFs that open directly in QGIS. Exit codes: `vegediff info --exit-codes`.
"""

def _vendored_click_errors() -> tuple[type, ...]:
    """Typer >= 0.2x parses with its own copy of click, whose exceptions are not click's."""
    try:
        from typer._click import exceptions as vendored
    except ImportError:
        return ()
    return (vendored.ClickException,)


# Exceptions of the parser, from click and from the click copy inside newer Typer releases.
ABORTS = tuple({click.exceptions.Abort, typer.Abort})
EXITS = tuple({click.exceptions.Exit, typer.Exit})
USAGE_ERRORS = (click.ClickException, *_vendored_click_errors())

app = typer.Typer(
    name="vegediff",
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

for module in (fetch, prepare, forecast, ensemble, evaluate, train, info):
    module.register(app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vegediff {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", envvar="VEGEDIFF_DEBUG", help="Show full tracebacks on errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Options of every command; --debug is read by main(), before Typer parses anything."""


def _sigterm(signum, frame) -> None:  # cron and schedulers stop jobs with SIGTERM
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    signal.signal(signal.SIGTERM, _sigterm)
    configure_process()  # before any command loads torch: OpenMP reads its settings once
    debug = "--debug" in (argv if argv is not None else sys.argv[1:]) or os.environ.get("VEGEDIFF_DEBUG") == "1"
    saved = os.environ.get("VEGEDIFF_DEBUG")
    if debug:  # commands read it (e.g. fetch keeps GDAL's chatter behind --debug); restored below
        os.environ["VEGEDIFF_DEBUG"] = "1"
    try:
        return _dispatch(argv, debug)
    finally:
        if saved is None:
            os.environ.pop("VEGEDIFF_DEBUG", None)
        else:
            os.environ["VEGEDIFF_DEBUG"] = saved


def _dispatch(argv: list[str] | None, debug: bool) -> int:
    """Run the Typer app; map every exception to one line on stderr and an exit code."""
    try:
        result = app(args=argv, standalone_mode=False, prog_name="vegediff")
        if result == RunInterrupted.exit_code:  # Typer turns Ctrl-C into a bare exit code 130
            typer.echo(f"vegediff: error: {RunInterrupted.summary}", err=True)
        return result if isinstance(result, int) else 0
    except VegediffError as error:
        if debug:
            logging.getLogger("vegediff").exception("debug traceback")
        typer.echo(f"vegediff: error: {error}", err=True)
        return error.exit_code
    except KeyboardInterrupt:
        typer.echo(f"vegediff: error: {RunInterrupted.summary}", err=True)
        return RunInterrupted.exit_code
    except ABORTS:
        typer.echo(f"vegediff: error: {RunInterrupted.summary}", err=True)
        return RunInterrupted.exit_code
    except EXITS as done:
        return done.exit_code
    except USAGE_ERRORS as error:  # bad option or value: click's message in one line, exit code 2
        if type(error).__name__ == "NoArgsIsHelpError":  # a bare group: its help is the answer
            error.show()
            return error.exit_code
        command = getattr(getattr(error, "ctx", None), "command_path", "vegediff")
        typer.echo(f"vegediff: error: {error.format_message().rstrip('.')}; see `{command} --help`", err=True)
        return error.exit_code
    except Exception as error:  # a bug: say so in one line, keep the traceback behind --debug
        if debug:
            raise
        typer.echo(
            f"vegediff: internal error: {type(error).__name__}: {error} "
            "(re-run with --debug for the traceback and report it)",
            err=True,
        )
        return 1


def run() -> None:
    sys.exit(main())

