#!/usr/bin/env python3
"""Benchmark: one central-flow step against one GD step, and the ``minimal.py`` configuration.

Part 1 (``--part step``): the model of chapter 8 (digits, 1,000 examples, MLP 64-32-32-1 tanh,
square loss, h = 0.3), at a point on the edge of stability (after 600 GD steps). Times per call,
after compilation, median of repeats, for:

- one GD step (``theta - h grad E``, jitted);
- the parts of a central-flow step: warm-started Lanczos (``num_iter`` = 8 HVPs), one gradient,
  one nested forward pass giving ``grad E``, ``H u0`` and ``grad S`` (``sharpness_gradient``);
- one step of ``central_flow.run_central_flow`` (RK4, 1 substep: 1 Lanczos + 6 nested passes, one of
  them the per-step record; projected Euler, 1 substep: 1 Lanczos + 2 nested passes), the best of
  three 40-step runs after a compiling one, divided by 40 (per-step records and transfers included);
- one step of the stable flow by ``flows.integrate`` (dopri8, rtol 1e-7), averaged over 50 steps.

in float64 (as the book runs it) and float32.

Part 2 (``--part minimal``): the configuration of the official PyTorch ``minimal.py`` of Cohen et al.
(ICLR 2025), as quoted in ``shared/science.md``: MLP 3072-256-256-4 with GELU, 1,000 CIFAR-10-shaped
examples of 4 classes, square loss, eta = 0.02, 400 steps of GD, central flow and gradient flow
(quoted at under 20 minutes on an H100). Synthetic data (standard normal inputs, random labels: the
content does not change the cost). On a GPU, ``--full`` runs all 400 steps of each and prints the total
against the 20-minute reference; on CPU the default times a few steps of the full-size model and
extrapolates to 400, and says so. Precision: float32; on GPUs matmuls run in true float32
(``jax_default_matmul_precision = "highest"``, i.e. TF32 off, as in the reference) unless ``--tf32``.

    .venv/bin/python benchmarks/central_flow_benchmark.py                 # both parts, CPU sizes
    .venv/bin/python benchmarks/central_flow_benchmark.py --part minimal --full   # on a GPU
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
    return p.parse_args()


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
    """Median wall time of ``fn(*args)`` after one warm-up call (compilation)."""
    block(fn(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        block(fn(*args))
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def run_time(E, theta, h, steps, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        t = time.perf_counter()
        central_flow.run_central_flow(E, theta, h, steps, progress=False, **kw)
        return time.perf_counter() - t


def per_step_of_run(E, theta, h, K, **kw):
    """Per-step time of ``run_central_flow``: best of three K-step runs after a compiling one, over K."""
    run_time(E, theta, h, K, **kw)                      # compile
    return min(run_time(E, theta, h, K, **kw) for _ in range(3)) / K


def device_name():
    d = jax.devices()[0]
    return f"{d.platform}: {getattr(d, 'device_kind', '?')}"


# --------------------------------------------------------------------------- part 1


def part_step():
    print(f"\nPart 1: one central-flow step vs one GD step, chapter 8's model ({device_name()})")
    digits = data.load_digits(n_train=1000, dtype=np.float64)
    y = ((digits.labels_train - 4.5) / 3.0)[:, None]
    h = 0.3
    rows = []
    for dtype in (np.float64, np.float32):
        E = models.full_batch_loss(models.mlp_apply("tanh"), digits.x_train.astype(dtype), y.astype(dtype))
        theta0 = models.init_mlp(jax.random.key(0), [64, 32, 32, 1], "tanh", dtype=dtype)
        theta = jax.tree_util.tree_map(lambda a: a[-1], flows.gradient_descent(E, theta0, h, 600))
        flat = ravel_pytree(theta)[0]
        u0 = spectral.top_hessian_eigenpairs(E, theta, k=1, num_iter=40)[1][:, 0]
        gd_step = jax.jit(lambda p: jax.tree_util.tree_map(lambda a, g: a - h * g, p, jax.grad(E)(p)))
        lanczos = jax.jit(lambda p, v: spectral.top_hessian_eigenpairs(E, p, k=2, num_iter=8, v0=v))
        grad = jax.jit(jax.grad(E))
        nested = jax.jit(lambda p, u: central_flow.sharpness_gradient(E, p, u))
        t_gd = timed(gd_step, theta)
        parts = {
            "GD step": t_gd,
            "gradient": timed(grad, theta),
            "Lanczos, 8 HVPs (warm start)": timed(lanczos, theta, u0),
            "grad S (jvp over HVP)": timed(nested, theta, u0),
        }
        K = 40
        parts["central-flow step, RK4 (run_central_flow)"] = per_step_of_run(E, theta, h, K, substeps=1, num_iter=8)
        parts["central-flow step, projected Euler"] = per_step_of_run(E, theta, h, K, substeps=1, num_iter=8,
                                                                      method="euler")
        field = central_flow.stable_flow(E, h)
        flows.integrate(field, theta, np.arange(51.0), rtol=1e-7, atol=1e-9)         # compile
        t = time.perf_counter()
        flows.integrate(field, theta, np.arange(51.0), rtol=1e-7, atol=1e-9)
        parts["stable-flow step (dopri8, rtol 1e-7)"] = (time.perf_counter() - t) / 50
        for name, sec in parts.items():
            rows.append((np.dtype(dtype).name, name, sec * 1e3, sec / t_gd))
        print(f"  [{np.dtype(dtype).name}] D = {flat.size} parameters, n = 1000 examples")
    print(f"\n  {'precision':<9} {'operation':<44} {'ms':>9} {'x GD step':>10}")
    for prec, name, ms, ratio in rows:
        print(f"  {prec:<9} {name:<44} {ms:>9.2f} {ratio:>10.1f}")


# --------------------------------------------------------------------------- part 2


def part_minimal():
    on_gpu = jax.default_backend() == "gpu"
    full = ARGS.full or on_gpu
    steps_ref = 400
    n, classes, eta = 1000, 4, 0.02
    prec = "float32, TF32 allowed" if ARGS.tf32 else "float32 (matmul precision 'highest': no TF32)"
    print(f"\nPart 2: minimal.py configuration, MLP 3072-256-256-4 GELU, {n} CIFAR-shaped synthetic examples,"
          f" {classes} classes, MSE, eta = {eta} ({device_name()}; {prec})")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3072)).astype(np.float32)
    labels = rng.integers(0, classes, size=n)
    y = data.one_hot(labels, classes, dtype=np.float32)
    E = models.full_batch_loss(models.mlp_apply("gelu"), x, y)
    theta0 = models.init_mlp(jax.random.key(0), [3072, 256, 256, classes], "gelu", dtype=np.float32)
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
