"""Example processing pipeline for dkist-processing-core."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version

__all__ = ["__version__"]

try:
    __version__ = version("dkist-processing-example")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without installing
    __version__ = "0.0.0"
