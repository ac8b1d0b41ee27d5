"""edgerob: latency, power and robustness of neural networks on edge and desktop hardware."""

__version__ = "0.1.0"

from edgerob.errors import EdgerobError

__all__ = ["EdgerobError", "__version__"]
