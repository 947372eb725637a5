"""`vegediff train`: train the vegetation VAE or the VegeNet denoiser on cubes."""

from __future__ import annotations

import typer

from .pending import not_available


def train() -> None:
    """Train the vegetation VAE or the VegeNet denoiser on cubes."""
    raise not_available("train", 3)


def register(app: typer.Typer) -> None:
    app.command("train")(train)
