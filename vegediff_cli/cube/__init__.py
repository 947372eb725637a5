"""The cube format, its readers and writers."""
