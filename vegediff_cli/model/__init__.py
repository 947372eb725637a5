"""The VegeDiff networks (VAE, VegeNet), presets and weights files (torch only, no cube I/O)."""
