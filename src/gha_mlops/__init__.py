"""gha-mlops: GitHub Actions as the control plane of machine-learning work.

The public Python API is small on purpose: the command line is the product, and
:mod:`gha_mlops.train` holds the helpers that users' training scripts import.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
