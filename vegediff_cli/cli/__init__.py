"""Command-line interface: thin wrappers over the library, one file per command."""
