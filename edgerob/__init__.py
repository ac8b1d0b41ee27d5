"""edgerob: latency, power and robustness of neural networks on edge and desktop hardware."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edgerob")  # the installed distribution's
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0.4.0"

from edgerob.errors import EdgerobError  # noqa: E402

__all__ = ["EdgerobError", "__version__"]
