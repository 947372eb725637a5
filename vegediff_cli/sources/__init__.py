"""Data sources: STAC search, Sentinel-2 reads, and the network policy behind them."""
