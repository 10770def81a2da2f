"""chaoslab: chaos and load testing that tells which layer absorbed a fault."""

__version__ = "0.1.0"
