"""The package version (recorded in run manifests)."""

__version__ = "0.1.0"
