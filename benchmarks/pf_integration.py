#!/usr/bin/env python3
"""Benchmark: integrating the complex principal flow, the authors' way against pfcourse's.

Workload: the authors' two public PF notebooks (google-deepmind/discretisation_drift,
``principal_flow_instability_single_objective/PF_exact_GD_*.ipynb``): ``E(θ) = θᵀAθ`` with
``A = diag(1, 0.01)``, start ``(-0.35, -0.2)``, ``h = 0.9`` (200 GD steps) and ``h = 1.05`` (5 steps).
Every method integrates the *same* field, ``pfcourse.flows.principal_flow(E, h)`` on a complex state
(holomorphic gradient and Hessian, ``jnp.linalg.eig`` and the complex logarithm at every
evaluation), and is compared with the GD iterates at ``t = nh``:

- ``explicit Euler, dt = 1e-5``: the notebooks' integrator, ``h / dt`` evaluations per GD step,
  here compiled into one ``lax.fori_loop`` (at least as fast as the notebooks, which call a
  jit-compiled field from Python). It runs over the first ``--euler-steps`` GD steps only.
- ``flows.integrate, dopri8``: adaptive Dopri8, rtol 1e-10, atol 1e-12 (the defaults).
- ``flows.integrate, rk4``: classical RK4 with ``--substeps`` steps per GD step.
- ``flows.quadratic_pf_solution``: the exact solution of a quadratic (one ``eigh``, no field).

Columns: field evaluations per GD step; wall time per GD step once compiled ("steady": the best of
three further public calls, which reuse the first call's compilation because fields are data) and
for the first public call including compilation ("first call"); the speed-up over explicit Euler (steady times); the largest ``|θ(nh) - θ_n|``
over the GD steps run. All in one process, one after the other, float64 on CPU (or the default
JAX device).

    .venv/bin/python benchmarks/pf_integration.py                  # ~1-2 minutes on 2 CPU cores
    .venv/bin/python benchmarks/pf_integration.py --euler-steps 1  # quicker
    .venv/bin/python benchmarks/pf_integration.py --smoke          # does it run? (numbers meaningless)

``--smoke`` (``tests/test_benchmarks.py``): 5 and 2 GD steps instead of 200 and 5, Euler over one GD
step at ``dt = 1e-3``, RK4 with 4 substeps.
"""
from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from pfcourse import flows, landscapes  # noqa: E402

CASES = ((0.9, 200), (1.05, 5))
SMOKE_CASES = ((0.9, 5), (1.05, 2))
THETA0 = (-0.35, -0.2)


def block(x):
    return jax.block_until_ready(x)


def timed(fn, repeats=1):
    """(result, best wall time over ``repeats`` calls)."""
    best, out = np.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = block(fn())
        best = min(best, time.perf_counter() - t0)
    return out, best


def euler_runner(field, h, gd_steps, dt):
    """Explicit Euler ``y <- y + dt f(y)`` with ``h/dt`` steps per GD step, compiled once."""
    n = int(round(h / dt))
    if abs(n * dt - h) > 1e-12:
        raise ValueError(f"h / dt must be an integer, got {h / dt}.")

    @jax.jit
    def run(y0):
        def gd_step(y, _):
            y = jax.lax.fori_loop(0, n, lambda i, y: y + dt * field(y), y)
            return y, y

        _, ys = jax.lax.scan(gd_step, y0, None, length=gd_steps)
        return jnp.concatenate([y0[None], ys])

    return run, n


def run_case(h, n, euler_steps, substeps, dt):
    A = landscapes.quadratic([2.0, 0.02])        # (1/2) θᵀ(2A)θ = θᵀAθ, A = diag(1, 0.01)
    theta0 = jnp.array(THETA0)
    field = flows.principal_flow(A.loss, h)
    gd = np.asarray(flows.gradient_descent(A.loss, theta0, h, n))
    rows = []

    # the authors' explicit Euler, first `euler_steps` GD steps
    k = min(euler_steps, n)
    run, per_step = euler_runner(field, h, k, dt)
    y0 = theta0.astype(jnp.complex128)
    _, first = timed(lambda: run(y0))
    ys, steady = timed(lambda: run(y0))
    label = "explicit Euler, dt = 1e-5 (authors)" if dt == 1e-5 else f"explicit Euler, dt = {dt:g}"
    rows.append((label, k, per_step, steady / k, first / k,
                 np.abs(np.asarray(ys) - gd[: k + 1]).max()))

    ts = h * np.arange(n + 1)
    for method, label in (("dopri8", "flows.integrate, dopri8"), ("rk4", f"flows.integrate, rk4 x{substeps}")):
        kw = dict(method="rk4", substeps=substeps) if method == "rk4" else {}
        call = lambda: flows.integrate(field, theta0, ts, return_stats=True, **kw)  # noqa: E731
        (states, stats), first = timed(call)       # compiles
        _, steady = timed(call, 3)                 # the public call again: the field is data, no recompilation
        rows.append((label, n, stats["field_evaluations"] / n, steady / n, first / n,
                     np.abs(np.asarray(states) - gd).max()))

    exact, first = timed(lambda: flows.quadratic_pf_solution(A.params["A"], theta0, h, ts))
    exact, steady = timed(lambda: flows.quadratic_pf_solution(A.params["A"], theta0, h, ts), 5)
    rows.append(("flows.quadratic_pf_solution (exact)", n, 0, steady / n, first / n,
                 np.abs(np.asarray(exact) - gd).max()))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--euler-steps", type=int, default=2, help="GD steps the Euler reference runs (default 2)")
    parser.add_argument("--substeps", type=int, default=40, help="RK4 substeps per GD step (default 40)")
    parser.add_argument("--dt", type=float, default=1e-5, help="Euler step (default 1e-5, the notebooks')")
    parser.add_argument("--smoke", action="store_true", help="toy sizes: does the script run?")
    args = parser.parse_args(argv)
    cases = CASES
    if args.smoke:
        cases, args.euler_steps, args.dt, args.substeps = SMOKE_CASES, 1, 1e-3, 4

    print(f"JAX {jax.__version__} on {jax.devices()[0].platform}, float64; the same complex PF field for every method")
    for h, n in cases:
        rows = run_case(h, n, args.euler_steps, args.substeps, args.dt)
        euler_steady = rows[0][3]
        print(f"\nE = θᵀAθ, A = diag(1, 0.01), θ0 = {THETA0}, h = {h} (h λ_max = {2 * h:g}), GD steps in the notebook: {n}")
        header = (f"{'method':<38} {'GD steps':>8} {'evals/GD step':>13} {'steady s/GD step':>16} "
                  f"{'first call s/GD step':>20} {'speed-up':>9} {'max |θ - θ_GD|':>15}")
        print(header)
        print("-" * len(header))
        for label, steps, evals, steady, first, err in rows:
            print(f"{label:<38} {steps:>8d} {evals:>13,.0f} {steady:>16.2e} {first:>20.2e} "
                  f"{euler_steady / steady:>8.0f}x {err:>15.1e}")


if __name__ == "__main__":
    main()
