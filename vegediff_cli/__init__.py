"""vegediff: vegetation forecasting from Sentinel-2 with the VegeDiff latent diffusion model."""

__version__ = "0.1.0"
