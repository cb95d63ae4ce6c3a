"""pfcourse: gradient descent at large learning rates, as continuous-time flows.

The package behind the course book. Core mathematics (no plotting, no data):

- :mod:`pfcourse.flows`: gradient descent and the flows that model it (gradient flow, IGR,
  the principal flow), the exact principal flow of a quadratic, and :func:`~pfcourse.flows.integrate`.
- :mod:`pfcourse.spectral`: Hessian-vector products, dense Hessians, Lanczos, sharpness.
- :mod:`pfcourse.symbolic`: backward error analysis of explicit Euler in SymPy.
- :mod:`pfcourse.landscapes`: the toy losses the chapters use.

Float64: the book and the tests turn on ``jax.config.update("jax_enable_x64", True)``; pfcourse
itself never changes JAX's global configuration.
"""
__version__ = "0.1.0"
