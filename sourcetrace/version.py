"""The package version, importable without importing the package's models."""

__version__ = "0.1.0"
