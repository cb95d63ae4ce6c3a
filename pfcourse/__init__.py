"""pfcourse: gradient descent at large learning rates, as continuous-time flows.

The package behind the course book. Core mathematics (no plotting, no data):

- :mod:`pfcourse.flows`: gradient descent and the flows that model it (gradient flow, IGR,
  the principal flow), the exact principal flow of a quadratic, and :func:`~pfcourse.flows.integrate`.
- :mod:`pfcourse.spectral`: Hessian-vector products, dense Hessians, Lanczos, sharpness.
- :mod:`pfcourse.krylov`: functions of the Hessian applied to a vector by Lanczos, :math:`f(H)v`; the
  principal flow's field without an eigendecomposition, at real and complex states.
- :mod:`pfcourse.symbolic`: backward error analysis of explicit Euler in SymPy.
- :mod:`pfcourse.stability`: growth rates and regimes along one eigen-direction (chapter 4).
- :mod:`pfcourse.landscapes`: the toy losses the chapters use.

Training (uses the core): :mod:`pfcourse.training`, the one training loop: any optax optimiser, the
top of the Hessian's spectrum tracked on a schedule (chapters 6-8).

Experiments (use the core): :mod:`pfcourse.data` (digits, CIFAR-10), :mod:`pfcourse.models`
(MLPs and losses), :mod:`pfcourse.eos` (full-batch GD with sharpness tracking, chapter 6),
:mod:`pfcourse.dal` (drift-adjusted learning rates as an optax transformation, chapter 7),
:mod:`pfcourse.central_flow` (the central flow at the edge of stability, chapter 8),
:mod:`pfcourse.one_step` (one GD step against gradient flow, IGR and the PF on a network, appendix B),
:mod:`pfcourse.edge_toy` (the PF through the edge of stability on a toy, beside GD and the central
flow, chapter 8), :mod:`pfcourse.dal_sgd` (DAL with minibatches: SGD on digits, chapter 7).

Presentation (uses both): :mod:`pfcourse.plots`, :mod:`pfcourse.widgets`, :mod:`pfcourse.glue` (a
run's numbers for the book's prose) and the CLI (``python -m pfcourse``). The instructor's tool (Colab notebooks, assignments, the autograder) is not
part of this package: it is ``pfcourse_instructor``, a second distribution in the repository's
``instructor/``, and nothing here imports it (tests/test_layers.py).

Float64: the book and the tests turn on ``jax.config.update("jax_enable_x64", True)``; pfcourse
itself never changes JAX's global configuration.
"""
__version__ = "0.1.0"
