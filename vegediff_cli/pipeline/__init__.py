"""Pipeline steps: arrays and datasets in, datasets out; no argument parsing, no printing."""
