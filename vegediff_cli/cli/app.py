"""The `vegediff` command: a Typer app, and the one place that turns errors into exit codes."""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback

import click
import typer

from ..errors import EXIT_CODES, RunInterrupted, VegediffError
from ..io_errors import classify_io_error
from ..pipeline.forecast.runtime import configure_process
from ..redact import redact
from . import ensemble, evaluate, fetch, forecast, info, prepare, train
from .options import as_flags

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
        from .version import version_text  # reads the weights' header, no torch

        typer.echo(version_text())
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", envvar="VEGEDIFF_DEBUG", help="Show full tracebacks on errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and the weights in use (path, SHA-256)."),
) -> None:
    """Options of every command; --debug is read by main(), before Typer parses anything."""


def _sigterm(signum, frame) -> None:  # cron and schedulers stop jobs with SIGTERM
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    signal.signal(signal.SIGTERM, _sigterm)
    configure_process()  # before any command loads torch: OpenMP reads its settings once
    args = list(argv if argv is not None else sys.argv[1:])
    options = args[: args.index("--")] if "--" in args else args
    debug = "--debug" in options or os.environ.get("VEGEDIFF_DEBUG") == "1"
    if "--debug" in options:  # accepted anywhere, also after the command (`vegediff forecast ... --debug`)
        args = ["--debug", *[a for i, a in enumerate(args) if not (a == "--debug" and i < len(options))]]
        argv = args
    saved = os.environ.get("VEGEDIFF_DEBUG")
    if debug:  # commands read it (e.g. fetch keeps GDAL's chatter behind --debug); restored below
        os.environ["VEGEDIFF_DEBUG"] = "1"
    try:
        return _dispatch(argv, debug, json_errors="--json" in options)
    finally:
        if saved is None:
            os.environ.pop("VEGEDIFF_DEBUG", None)
        else:
            os.environ["VEGEDIFF_DEBUG"] = saved


def _fail(code: int, kind: str, problem: str, fix: str | None, *, line: str, json_errors: bool) -> int:
    """One line on stderr; with --json also {"error": {...}} on stdout, so scripts always get JSON."""
    typer.echo(redact(line), err=True)
    if json_errors:
        error = {"code": code, "type": kind, "meaning": EXIT_CODES.get(code, "unexpected problem"),
                 "message": redact(problem), "fix": redact(fix) if fix else None}
        sys.stdout.write(json.dumps({"error": error}, indent=2) + "\n")
        sys.stdout.flush()
    return code


def _fail_with(error: VegediffError, *, json_errors: bool) -> int:
    """A library error in the CLI's words: its parameter names become the flags that set them."""
    problem, fix = as_flags(error.problem), as_flags(error.fix) if error.fix else error.fix
    message = problem if fix is None else f"{problem}; {fix}"
    return _fail(error.exit_code, type(error).__name__, problem, fix, line=f"vegediff: error: {message}",
                 json_errors=json_errors)


def _dispatch(argv: list[str] | None, debug: bool, *, json_errors: bool = False) -> int:
    """Run the Typer app; map every exception to one line on stderr and an exit code."""
    interrupted = RunInterrupted.exit_code
    try:
        result = app(args=argv, standalone_mode=False, prog_name="vegediff")
        if result == interrupted:  # Typer turns Ctrl-C into a bare exit code 130
            return _fail(interrupted, "RunInterrupted", RunInterrupted.summary, None,
                         line=f"vegediff: error: {RunInterrupted.summary}", json_errors=json_errors)
        return result if isinstance(result, int) else 0
    except VegediffError as error:
        if debug:
            _traceback()
        return _fail_with(error, json_errors=json_errors)
    except (KeyboardInterrupt, *ABORTS):
        return _fail(interrupted, "RunInterrupted", RunInterrupted.summary, "run the same command again",
                     line=f"vegediff: error: {RunInterrupted.summary}", json_errors=json_errors)
    except EXITS as done:
        return done.exit_code
    except USAGE_ERRORS as error:  # bad option or value: click's message in one line, exit code 2
        if type(error).__name__ == "NoArgsIsHelpError":  # a bare group: its help is the answer
            error.show()
            return error.exit_code
        command = getattr(getattr(error, "ctx", None), "command_path", "vegediff")
        message = error.format_message().rstrip(".")
        return _fail(error.exit_code, "UsageError", message, f"see `{command} --help`",
                     line=f"vegediff: error: {message}; see `{command} --help`", json_errors=json_errors)
    except Exception as error:  # a bug: say so in one line, keep the traceback behind --debug
        if debug:
            _traceback()
        known = classify_io_error(error)  # a damaged input read lazily, deep inside a library
        if known is not None:
            return _fail_with(known, json_errors=json_errors)
        problem = f"{type(error).__name__}: {error}"
        return _fail(1, "InternalError", problem, "re-run with --debug for the traceback and report it",
                     line=f"vegediff: internal error: {problem} (re-run with --debug for the traceback and report it)",
                     json_errors=json_errors)


def _traceback() -> None:
    """The traceback of the exception being handled, on stderr, credentials masked."""
    typer.echo(redact("".join(traceback.format_exc())).rstrip("\n"), err=True)


def run() -> None:
    sys.exit(main())

