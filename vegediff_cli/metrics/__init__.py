"""Forecast scores (pure numpy/pandas, no I/O).

- :mod:`.deterministic`: GreenEarthNet's per-pixel NDVI scores and high-quality pixel rule;
- :mod:`.aggregate`: its (cube, land cover) averaging, headline figure and outperformance;
- :mod:`.probabilistic`: fair CRPS, spread-skill ratio, rank histogram, reliability of member forecasts.
"""
