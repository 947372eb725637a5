"""`vegediff --version` and `vegediff info --weights`: the release and the weights in use, with their SHA-256.

Reads only the safetensors header and hashes the file (model/shipped.py): no torch import, so
`--version` answers in a fraction of a second.
"""

from __future__ import annotations

import os
from pathlib import Path

from .. import __version__
from ..errors import InputNotFoundError, ModelError
from ..model.shipped import default_weights, describe_weights, weights_source


def weights_in_use(path: str | os.PathLike | None = None) -> dict:
    """describe_weights of `path`, else of $VEGEDIFF_WEIGHTS or the shipped file; errors name the fix."""
    chosen = Path(path) if path is not None else default_weights()
    source = weights_source(path)
    try:
        return describe_weights(chosen, source=source)
    except FileNotFoundError as exc:
        raise InputNotFoundError(f"weights file {chosen} ({source}) does not exist",
                                 fix="pass a weights path, unset $VEGEDIFF_WEIGHTS, or reinstall vegediff") from exc
    except (OSError, ValueError) as exc:
        raise ModelError(f"{chosen} is not a readable weights file ({exc})", fix="re-download or retrain it") from exc


def version_text() -> str:
    """Two lines: the release, and which weights a forecast would use (or why there are none)."""
    chosen = default_weights()
    try:
        info = describe_weights(chosen, source=weights_source(None))
    except (OSError, ValueError) as exc:
        reason = "missing" if isinstance(exc, FileNotFoundError) else f"unreadable: {exc}"
        return f"vegediff {__version__}\nweights: {chosen} ({weights_source(None)}, {reason})"
    return (f"vegediff {__version__}\nweights: {info['path']} ({info['source']}; preset {info['preset']}, "
            f"trained {(info['created'] or '?')[:10]}, sha256 {info['sha256']})")


# VegeNetConfig.meteorology -> what `info --weights` says of it
METEOROLOGY_READ = {"absolute": "each frame's values (as in the paper)",
                    "context_anomaly": "each frame's change from the context frames' mean",
                    "absolute_and_anomaly": "each frame's values and their change from the context frames' mean",
                    "none": "not read"}


def _domain_text(entries: list[dict] | None) -> str:
    """Conditioned sequences as 'latitude, first..last forecast start' (model/domain.py); the others counted."""
    if entries is None:
        return "not recorded"
    shown = [f"{e['latitude']:.1f} N {e['first_start'][5:]}..{e['last_start'][5:]}" for e in entries if e["conditioned"]]
    others = sum(not e["conditioned"] for e in entries)
    return f"forecast starts with weather: {'; '.join(sorted(set(shown))) or 'none'}" + (f"; {others} more without" if others else "")


def weights_lines(info: dict) -> list[tuple[str, str]]:
    """(label, value) rows of `vegediff info --weights`."""
    held_out = info["held_out"]
    rows = [
        ("path", info["path"]),
        ("source", info["source"]),
        ("sha256", info["sha256"]),
        ("size", f"{info['size_bytes'] / 2**20:.1f} MiB"),
        ("preset", str(info["preset"])),
        ("denoisers", f"{info['denoisers']} (members drawn by each in turn)" if info["denoisers"] != 1
                      else str(info["denoisers"])),
        ("meteorology", METEOROLOGY_READ.get(info["meteorology"], str(info["meteorology"]))),
        ("stage", str(info["stage"])),
        ("created", str(info["created"])),
        ("selected checkpoint", f"step {info['selected_step']} ({info['selected_weights']})"),
        ("trained on", f"{info['trained_on_sequences']} sequences"),
        ("held out", ", ".join(held_out) if isinstance(held_out, list) else str(held_out)),
        ("validation", f"{info['validation_cube']}: RMSE {info['validation_rmse']} "
                       f"(persistence {info['validation_persistence_rmse']}), NSE {info['validation_nse']}"),
        ("recommended guidance", str(info["recommended_guidance"])),
        ("training domain", _domain_text(info.get("training_domain"))),
        ("spread calibration", str(info["spread_calibration"] or "none (raw members)")),
        ("data licences", str(info["data_licences"])),
        ("model card", str(info["model_card"])),
    ]
    return rows
