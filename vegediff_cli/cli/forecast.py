"""`vegediff forecast`: forecast the next frames (NDVI and reflectance) with the diffusion model; GPU when present, CPU otherwise."""

from __future__ import annotations

import typer

from .pending import not_available


def forecast() -> None:
    """Forecast the next frames (NDVI and reflectance) with the diffusion model; GPU when present, CPU otherwise."""
    raise not_available("forecast", 5)


def register(app: typer.Typer) -> None:
    app.command("forecast")(forecast)
