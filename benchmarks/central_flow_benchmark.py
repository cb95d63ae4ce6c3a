#!/usr/bin/env python3
"""Benchmark: one central-flow step against one GD step, and the ``minimal.py`` configuration.

Part 1 (``--part step``): the model of chapter 8 (digits, 1,000 examples, MLP 64-32-32-1 tanh,
square loss, h = 0.3), at a point on the edge of stability: the central flow's own state after
``--start`` (600) steps from chapter 8's initialisation, where ``S = 2/h`` (printed). GD's iterate
600 cannot serve: GD oscillates across the edge, its sharpness there is 6.79 > 2/h = 6.67, and
``run_central_flow`` refuses a start above the edge. Times per call, after compilation, best of
``--repeats``, for:

- one GD step (``theta - h grad E``, jitted) and one gradient;
- the two parts of a central-flow step, each jitted alone at the start point: the warm-started
  Lanczos call (k = 2, ``num_iter`` = 8 HVPs, as ``central_flow`` calls it) and one nested forward
  pass (``grad E``, ``H u`` and ``grad S`` in one jvp over jvp over grad, the pass the step's field
  evaluations, record and projection make); ``sharpness_gradient`` (jvp over HVP) for comparison;
- one step of ``central_flow.run_central_flow`` (RK4, 1 substep: 1 Lanczos call and 6 nested
  passes: the record, the four RK4 stages, the projection onto the edge; projected Euler: 1 Lanczos
  + 2 nested passes), the best of three ``--steps``-step runs after a compiling one, divided by the
  steps (per-step records, transfers and checks included), and where the RK4 step's time goes: the
  measured Lanczos call and six times the measured nested pass as shares of it, and the rest;
- one step of the stable flow by ``flows.integrate`` (dopri8, rtol 1e-7) from the same point,
  the best of three ``--steps``-step runs divided by the steps, with the solver's own steps per GD
  step.

in float64 (as the book runs it) and float32 (the float64 point rounded).

Part 2 (``--part minimal``): the configuration of the official PyTorch ``minimal.py`` of Cohen et al.
(ICLR 2025), as quoted in ``shared/science.md``: MLP 3072-256-256-4 with GELU, 1,000 CIFAR-10-shaped
examples of 4 classes, square loss, eta = 0.02, 400 steps of GD, central flow and gradient flow
(quoted at under 20 minutes on an H100). Synthetic data (standard normal inputs, random labels: the
content does not change the cost). On a GPU, ``--full`` runs all 400 steps of each and prints the total
against the 20-minute reference; on CPU the default times a few steps of the full-size model and
extrapolates to 400, and says so. Precision: float32; on GPUs matmuls run in true float32
(``jax_default_matmul_precision = "highest"``, i.e. TF32 off, as in the reference) unless ``--tf32``.

``--smoke``: both parts at toy sizes (200 examples, float64 only, a 20-step start, 2-step runs, one
repeat; part 2 with a 3072-16-16-4 net on 100 examples), to check that the script runs
(``tests/test_benchmarks.py``); its numbers mean nothing.

    .venv/bin/python benchmarks/central_flow_benchmark.py                 # both parts, CPU sizes
    .venv/bin/python benchmarks/central_flow_benchmark.py --part minimal --full   # on a GPU
    .venv/bin/python benchmarks/central_flow_benchmark.py --smoke         # seconds: does it run?
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=["step", "minimal", "all"], default="all")
    p.add_argument("--full", action="store_true", help="minimal.py: run all 400 steps (for a GPU)")
    p.add_argument("--cpu-steps", type=int, default=3, help="minimal.py on CPU: steps timed per method")
    p.add_argument("--tf32", action="store_true", help="allow TF32 matmuls on GPU (default: true float32)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--start", type=int, default=600, help="part 1: central-flow steps to the timed point")
    p.add_argument("--steps", type=int, default=40, help="part 1: steps of each timed run")
    p.add_argument("--smoke", action="store_true", help="toy sizes: does the script run? (numbers meaningless)")
    args = p.parse_args()
    if args.smoke:
        args.repeats, args.start, args.steps, args.cpu_steps = 1, 20, 2, 1
    return args


ARGS = parse()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
if not ARGS.tf32:
    jax.config.update("jax_default_matmul_precision", "highest")

import jax.numpy as jnp  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

from pfcourse import central_flow, data, flows, models, spectral  # noqa: E402


def block(x):
    return jax.tree_util.tree_map(lambda a: a.block_until_ready() if hasattr(a, "block_until_ready") else a, x)


def timed(fn, *args, repeats=ARGS.repeats):
    """Best wall time of ``repeats`` calls of ``fn(*args)`` after one warm-up call (compilation): on a
    shared machine other processes only ever add time, so the best call is the least disturbed."""
    block(fn(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        block(fn(*args))
        times.append(time.perf_counter() - t)
    return float(np.min(times))


def quiet_run(E, theta, h, steps, **kw):
    """``run_central_flow`` without its progress bar and second-eigenvalue warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return central_flow.run_central_flow(E, theta, h, steps, progress=False, **kw)


def run_time(E, theta, h, steps, **kw):
    t = time.perf_counter()
    quiet_run(E, theta, h, steps, **kw)
    return time.perf_counter() - t


def per_step_of_run(E, theta, h, K, **kw):
    """Per-step time of ``run_central_flow``: best of three K-step runs after a compiling one, over K."""
    run_time(E, theta, h, K, **kw)                      # compile
    return min(run_time(E, theta, h, K, **kw) for _ in range(3)) / K


def device_name():
    d = jax.devices()[0]
    return f"{d.platform}: {getattr(d, 'device_kind', '?')}"


# --------------------------------------------------------------------------- part 1

NUM_ITER = 8    # Lanczos iterations per central-flow step, as chapter 8 runs it


def edge_point(E, theta0, h, steps):
    """The central flow's state after ``steps`` steps from ``theta0`` (RK4, 1 substep, as chapter 8),
    with its sharpness times h/2 and its sigma^2 there (sigma^2 > 0: on the edge)."""
    run = quiet_run(E, theta0, h, steps, substeps=1, num_iter=NUM_ITER)
    return jax.tree_util.tree_map(lambda a: a[-1], run.params), run.sharpness[-1] * h / 2, run.sigma2[-1]


def step_parts(E, theta, h):
    """Median times of a GD step, a gradient, and the parts of one central-flow step at ``theta``."""
    u0 = spectral.top_hessian_eigenpairs(E, theta, k=1, num_iter=40)[1][:, 0]
    u_tree = central_flow._as_tree(theta, u0)
    gd_step = jax.jit(lambda p: jax.tree_util.tree_map(lambda a, g: a - h * g, p, jax.grad(E)(p)))
    lanczos = jax.jit(lambda p, v: spectral.top_hessian_eigenpairs(E, p, k=2, num_iter=NUM_ITER, v0=v))
    nested = jax.jit(lambda p, u: central_flow._local_quantities(E, p, u))  # the step's own pass
    return {
        "GD step": timed(gd_step, theta),
        "gradient": timed(jax.jit(jax.grad(E)), theta),
        f"Lanczos, {NUM_ITER} HVPs (warm start)": timed(lanczos, theta, u0),
        "nested pass (grad E, Hu, grad S)": timed(nested, theta, u_tree),
        "grad S alone (jvp over HVP)": timed(jax.jit(lambda p, u: central_flow.sharpness_gradient(E, p, u)),
                                             theta, u0),
    }


def where_time_goes(parts, step):
    """The RK4 step's time ``step`` split into its measured Lanczos call and six nested passes, and the
    rest (the per-step records, the loop, transfers and checks, and any difference between a part
    timed alone and inside the step's program)."""
    lanczos = parts[f"Lanczos, {NUM_ITER} HVPs (warm start)"]
    six = 6 * parts["nested pass (grad E, Hu, grad S)"]
    return (f"one RK4 step {step * 1e3:.2f} ms: Lanczos call {lanczos * 1e3:.2f} ms ({100 * lanczos / step:.0f}%),"
            f" six nested passes {six * 1e3:.2f} ms ({100 * six / step:.0f}%),"
            f" rest {(step - lanczos - six) * 1e3:+.2f} ms ({100 * (step - lanczos - six) / step:+.0f}%)")


def stable_flow_step(E, theta, h, K):
    """Seconds per GD step of the stable flow over ``K`` steps from ``theta``, and its solver steps per GD step."""
    field, ts = central_flow.stable_flow(E, h), np.arange(K + 1.0)
    _, stats = flows.integrate(field, theta, ts, rtol=1e-7, atol=1e-9, return_stats=True)   # compile
    return timed(lambda: flows.integrate(field, theta, ts, rtol=1e-7, atol=1e-9), repeats=3) / K, stats["steps"] / K


def part_step():
    print(f"\nPart 1: one central-flow step vs one GD step, chapter 8's model ({device_name()})")
    n = 200 if ARGS.smoke else 1000
    digits = data.load_digits(n_train=n, dtype=np.float64)
    y = ((digits.labels_train - 4.5) / 3.0)[:, None]
    h, K = 0.3, ARGS.steps
    E64 = models.full_batch_loss(models.mlp_apply("tanh"), digits.x_train, y)
    theta0 = models.init_mlp(jax.random.key(0), [64, 32, 32, 1], "tanh", dtype=np.float64)
    point, edge, s2 = edge_point(E64, theta0, h, ARGS.start)
    print(f"  the point: the central flow after {ARGS.start} steps, S h/2 = {edge:.4f}, sigma^2 = {s2:.3g}"
          f" ({'on' if s2 > 0 else 'not yet on'} the edge); n = {n} examples,"
          f" D = {ravel_pytree(point)[0].size} parameters")
    print(f"\n  {'precision':<9} {'operation':<56} {'ms':>9} {'x GD step':>10}")
    for dtype in (np.float64,) if ARGS.smoke else (np.float64, np.float32):
        E = models.full_batch_loss(models.mlp_apply("tanh"), digits.x_train.astype(dtype), y.astype(dtype))
        theta = jax.tree_util.tree_map(lambda a: a.astype(dtype), point)
        parts = step_parts(E, theta, h)
        parts[f"run_central_flow, RK4, per step ({K} steps)"] = rk4 = per_step_of_run(E, theta, h, K, substeps=1,
                                                                                       num_iter=NUM_ITER)
        parts["run_central_flow, projected Euler, per step"] = per_step_of_run(
            E, theta, h, K, substeps=1, num_iter=NUM_ITER, method="euler")
        sec, solver_steps = stable_flow_step(E, theta, h, K)
        parts[f"stable flow (dopri8, rtol 1e-7; {solver_steps:.1f} steps/GD step)"] = sec
        for name, t in parts.items():          # each precision's rows as soon as they are measured
            print(f"  {np.dtype(dtype).name:<9} {name:<56} {t * 1e3:>9.2f} {t / parts['GD step']:>10.1f}",
                  flush=True)
        print(f"  [{np.dtype(dtype).name}] where the time goes: " + where_time_goes(parts, rk4), flush=True)
    print("  (each part jitted and timed alone at the point, as a share of run_central_flow's RK4 step)")


# --------------------------------------------------------------------------- part 2


def part_minimal():
    on_gpu = jax.default_backend() == "gpu"
    full = ARGS.full or on_gpu
    steps_ref = 400
    n, width, classes, eta = (100, 16, 4, 0.02) if ARGS.smoke else (1000, 256, 4, 0.02)
    prec = "float32, TF32 allowed" if ARGS.tf32 else "float32 (matmul precision 'highest': no TF32)"
    what = "SMOKE SIZE, not" if ARGS.smoke else "the"
    print(f"\nPart 2: {what} minimal.py configuration, MLP 3072-{width}-{width}-4 GELU, {n} CIFAR-shaped"
          f" synthetic examples, {classes} classes, MSE, eta = {eta} ({device_name()}; {prec})")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3072)).astype(np.float32)
    labels = rng.integers(0, classes, size=n)
    y = data.one_hot(labels, classes, dtype=np.float32)
    E = models.full_batch_loss(models.mlp_apply("gelu"), x, y)
    theta0 = models.init_mlp(jax.random.key(0), [3072, width, width, classes], "gelu", dtype=np.float32)
    print(f"  D = {models.num_params(theta0)} parameters")
    steps = steps_ref if full else ARGS.cpu_steps
    out = {}
    block(flows.gradient_descent(E, theta0, eta, steps))                        # compile
    t = time.perf_counter()
    block(flows.gradient_descent(E, theta0, eta, steps))
    out["GD"] = (time.perf_counter() - t) / steps
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        central_flow.run_central_flow(E, theta0, eta, 1, substeps=1, num_iter=8, progress=False)   # compile
        t = time.perf_counter()
        central_flow.run_central_flow(E, theta0, eta, steps, substeps=1, num_iter=8, progress=False)
        out["central flow (RK4, 1 substep, 8 Lanczos its)"] = (time.perf_counter() - t) / steps
    field = central_flow.stable_flow(E, eta)
    flows.integrate(field, theta0, np.arange(steps + 1.0), rtol=1e-6, atol=1e-8)  # compile
    t = time.perf_counter()
    flows.integrate(field, theta0, np.arange(steps + 1.0), rtol=1e-6, atol=1e-8)
    out["gradient flow (dopri8, rtol 1e-6)"] = (time.perf_counter() - t) / steps
    total = sum(out.values()) * steps_ref
    what = "measured" if full else f"extrapolated from {steps} steps each"
    print(f"\n  {'method':<46} {'s / step':>10} {'400 steps, s':>14}")
    for name, sec in out.items():
        print(f"  {name:<46} {sec:>10.3f} {sec * steps_ref:>14.1f}")
    print(f"  {'all three':<46} {'':>10} {total:>14.1f}   ({what})")
    if on_gpu:
        print(f"  reference: official PyTorch minimal.py, quoted under 20 min (1200 s) on an H100;"
              f" ratio reference / pfcourse >= {1200 / total:.1f} (same device kind only if this is an H100)")
    else:
        print("  no GPU here: the quoted reference (under 20 min on an H100) is not comparable with a CPU time;"
              " run with --full on a GPU for the ratio.")


if __name__ == "__main__":
    if ARGS.part in ("step", "all"):
        part_step()
    if ARGS.part in ("minimal", "all"):
        part_minimal()
