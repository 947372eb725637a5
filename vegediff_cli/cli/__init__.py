"""Command-line interface: thin wrappers over the library, one file per command.

Importing this package (the console script and ``python -m vegediff_cli`` do, before the heavy
imports of cli/app.py) makes SIGTERM during start-up end the process with the documented
message and exit code 130 instead of dying silently with -15; cli/app.py's ``main`` then
installs the handler that lets a running command clean up.
"""

import os
import signal
import sys
import threading


def _sigterm_during_startup(signum, frame) -> None:
    sys.stderr.write("vegediff: error: interrupted; no partial output was left behind\n")
    sys.stderr.flush()
    os._exit(130)  # nothing was written yet: no cleanup to run


if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) in (
        signal.SIG_DFL, None):
    signal.signal(signal.SIGTERM, _sigterm_during_startup)
