"""`vegediff fetch`: download Sentinel-2 L2A (B02, B03, B04, B8A, SCL at 20 m) from a STAC API by MGRS tile or bounding box."""

from __future__ import annotations

import typer

from .pending import not_available


def fetch() -> None:
    """Download Sentinel-2 L2A (B02, B03, B04, B8A, SCL at 20 m) from a STAC API by MGRS tile or bounding box."""
    raise not_available("fetch", 6)


def register(app: typer.Typer) -> None:
    app.command("fetch")(fetch)
