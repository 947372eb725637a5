"""One error family for the whole tool; each class carries its documented exit code.

Messages are in library terms: a parameter is named as the library spells it, in backticks
(```memory_mb` 10 is too small``), never as a command-line flag. The CLI prints the message on one
line (problem, then the fix) with each such name shown as the flag that sets it (``--memory-mb``,
cli/options.as_flags) and exits with ``error.exit_code``. The table in README.md ("Exit codes") is generated from
``EXIT_CODES`` below, so the code and the documentation cannot drift apart.
"""

from __future__ import annotations


class VegediffError(Exception):
    """Base class: a problem the user can fix, with a message that says how."""

    exit_code: int = 1
    summary: str = "unexpected problem"

    def __init__(self, problem: str, *, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(problem if fix is None else f"{problem}; {fix}")


class UsageError(VegediffError):
    """A parameter value that cannot work (impossible dates, horizon too long...)."""

    exit_code = 2
    summary = "invalid option or argument value"


class InputNotFoundError(VegediffError):
    exit_code = 3
    summary = "input file or directory does not exist"


class CorruptInputError(VegediffError):
    """The file exists but cannot be read as the format it claims to be."""

    exit_code = 4
    summary = "input file is corrupt or not in a supported format"


class MissingVariableError(VegediffError):
    exit_code = 5
    summary = "input lacks a required band, variable or layer"


class GeoreferenceError(VegediffError):
    """Missing or unusable CRS, transform, or grids that do not line up."""

    exit_code = 6
    summary = "missing CRS or grids/dates that do not match"


class NoValidDataError(VegediffError):
    """All-cloud cube, target without valid pixels, empty search result..."""

    exit_code = 7
    summary = "no usable (clear, valid) observations"


class RemoteError(VegediffError):
    """A server (STAC API, COG host) failed after retries, or answered nonsense."""

    exit_code = 8
    summary = "network or server error after retries"


class ModelError(VegediffError):
    """Weights missing, corrupt, or not matching the cube (bands, horizon)."""

    exit_code = 9
    summary = "model weights missing or incompatible"


class OutputError(VegediffError):
    exit_code = 10
    summary = "output cannot be written"


class StaleInputError(VegediffError):
    """An input was made from files that have changed since (e.g. cube.nc older than s2_raw.nc)."""

    exit_code = 11
    summary = "input is stale (made from files that changed since): re-run the step before"


class RunInterrupted(VegediffError):
    """Ctrl-C or SIGTERM: partial outputs were removed, a rerun resumes."""

    exit_code = 130
    summary = "interrupted; no partial output was left behind"


ALL_ERRORS: tuple[type[VegediffError], ...] = (
    VegediffError,
    UsageError,
    InputNotFoundError,
    CorruptInputError,
    MissingVariableError,
    GeoreferenceError,
    NoValidDataError,
    RemoteError,
    ModelError,
    OutputError,
    StaleInputError,
    RunInterrupted,
)

EXIT_CODES: dict[int, str] = {0: "success", **{cls.exit_code: cls.summary for cls in ALL_ERRORS}}
