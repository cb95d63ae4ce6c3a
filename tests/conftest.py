"""Tests run in float64: the identities of the course are checked to ~1e-10."""
import os

os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
