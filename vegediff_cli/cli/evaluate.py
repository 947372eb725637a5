"""`vegediff evaluate`: score forecasts against observations with GreenEarthNet's NDVI metrics and probabilistic scores."""

from __future__ import annotations

import typer

from .pending import not_available


def evaluate() -> None:
    """Score forecasts against observations with GreenEarthNet's NDVI metrics and probabilistic scores."""
    raise not_available("evaluate", 4)


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
