"""`vegediff ensemble`: summarise many stochastic forecast members: mean, spread, quantiles and exceedance probabilities."""

from __future__ import annotations

import typer

from .pending import not_available


def ensemble() -> None:
    """Summarise many stochastic forecast members: mean, spread, quantiles and exceedance probabilities."""
    raise not_available("ensemble", 5)


def register(app: typer.Typer) -> None:
    app.command("ensemble")(ensemble)
