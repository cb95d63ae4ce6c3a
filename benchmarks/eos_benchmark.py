#!/usr/bin/env python3
"""Benchmark: pfcourse.eos against a PyTorch reference of Cohen et al.'s method, and sharpness alone.

Part 1 (``--part training``): the edge-of-stability workload of Cohen et al. (ICLR 2021): fc-tanh
(3072-200-200-10), square loss, full-batch GD with h = 0.01, the train loss every step and the top-2
Hessian eigenvalues every 50 steps, on synthetic CIFAR-shaped data (standard normal inputs, labels
of a random linear teacher; the content does not change the cost). Both implementations start from
the same parameters and run in one process, one after the other; the table gives times, the ratio,
and the FLOP floor of the GD steps. Configurations:

- ``cpu-small``: 1,000 examples, 100 steps, 3 eigen-solves (a few minutes on 2 cores);
- ``gpu-full``: 5,000 examples (the paper's CIFAR-10 subset size), 1,000 steps, 21 eigen-solves;
- ``tiny``: a smoke test (seconds).

Part 2 (``--part sharpness``): the sharpness at one point near the edge of stability (500 digits,
64-32-32-10 tanh, float64, after 400 steps at h = 0.5) by dense ``eigh`` (exact), Lanczos with
10-80 iterations, power iteration with 20-500 iterations, and SciPy's ``eigsh`` on the same HVPs:
time against relative error.

Precision: float32 for part 1. On GPUs JAX's default matmul precision uses TF32 tensor cores and
PyTorch's default (``torch.backends.cuda.matmul.allow_tf32 = False``) does not, so by default both
run in true float32 (``--precision highest``); ``--tf32`` runs both with TF32 instead. The table
states what ran.

    .venv/bin/pip install -r benchmarks/requirements.txt     # torch, for the reference only
    .venv/bin/python benchmarks/eos_benchmark.py --config cpu-small
    .venv/bin/python benchmarks/eos_benchmark.py --part sharpness
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

# OpenMP threads that busy-wait make PyTorch on a shared CPU many times slower (measured here: a
# 200x3072 @ 3072x32 matmul takes 24 ms instead of 1.1 ms with 2 threads on a loaded 2-core
# machine). Passive waiting is set before torch loads; pass --omp-active to keep OpenMP's default.
if "--omp-active" not in sys.argv:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

CONFIGS = {
    "tiny": dict(n=200, hidden=[32, 32], steps=20, eig_every=10, k=2, lr=0.01, num_iter=20),
    "cpu-small": dict(n=1000, hidden=[200, 200], steps=100, eig_every=50, k=2, lr=0.01, num_iter=20),
    "gpu-full": dict(n=5000, hidden=[200, 200], steps=1000, eig_every=50, k=2, lr=0.01, num_iter=20),
}
# Peak dense throughput by device kind, FLOP/s: (float32 on CUDA cores, TF32 on tensor cores), from
# NVIDIA's data sheets (dense, no sparsity).
PEAKS = {
    "H100 80GB HBM3": (67e12, 495e12),   # H100 SXM
    "H100 PCIe": (51e12, 378e12),
    "H200": (67e12, 495e12),
    "A100-SXM4-80GB": (19.5e12, 156e12),
    "A100-SXM4-40GB": (19.5e12, 156e12),
}


def mlp_flops(n: int, sizes: list[int]) -> dict:
    """FLOPs of one full-batch gradient of an MLP and of the reference's extra loss pass.

    With ``L_l = 2 n d_in d_out`` the cost of layer l's matrix product: forward ``sum L_l``;
    backward: the weight gradients ``sum L_l`` and, for every layer but the first, the gradient
    with respect to its input, ``sum_{l>=2} L_l``. A Hessian-vector product by forward over reverse
    with the primal pass linearised once (as in ``spectral.top_hessian_eigenpairs``) pushes a
    tangent through both passes: the first layer has a constant input, so ``x dW_1`` and
    ``x^T d(delta_1)``, ``2 L_1``; every other layer has two products per product of the gradient,
    ``6 L_l``. Element-wise work (tanh, biases, the loss) is O(n * widths), negligible, not counted.
    """
    layer = [2 * n * a * b for a, b in zip(sizes[:-1], sizes[1:])]
    forward = sum(layer)
    backward = sum(layer) + sum(layer[1:])
    return dict(forward=forward, gradient=forward + backward, hvp=2 * layer[0] + 6 * sum(layer[1:]))


def synthetic_cifar(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3072)).astype(np.float32)
    teacher = rng.standard_normal((3072, 10)).astype(np.float32)
    labels = np.argmax(x @ teacher, axis=1).astype(np.int32)
    y = np.eye(10, dtype=np.float32)[labels]
    return x, y, labels


def measured_matmul_peak(dtype="float32", size=2048, reps=5) -> float:
    """FLOP/s of a square float32 matmul in JAX at the current matmul precision (a practical peak)."""
    import jax
    import jax.numpy as jnp

    a = jnp.ones((size, size), dtype) / size
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    best = np.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best


def run_training(cfg: dict, args) -> dict:
    import jax

    jax.config.update("jax_default_matmul_precision", "default" if args.tf32 else "highest")
    import jax.numpy as jnp

    from pfcourse import eos, models

    x, y, labels = synthetic_cifar(cfg["n"])
    sizes = [3072, *cfg["hidden"], 10]
    params0 = models.init_mlp(jax.random.key(0), sizes, "tanh", dtype=jnp.float32)
    D = models.num_params(params0)
    apply = models.mlp_apply("tanh")
    flops = mlp_flops(cfg["n"], sizes)
    backend = jax.default_backend()
    device = jax.devices()[0]
    kw = dict(labels=labels, eig_every=cfg["eig_every"], k=cfg["k"], num_iter=cfg["num_iter"], progress=False)

    # ---- pfcourse: compile once (cached per model and setting), then the timed run
    t0 = time.perf_counter()
    eos.gd_edge_of_stability(apply, params0, x, y, cfg["lr"], steps=cfg["eig_every"], **kw)
    t_compile = time.perf_counter() - t0
    best = None
    for _ in range(args.repeat):  # best of `repeat` (the machine may be shared)
        t0 = time.perf_counter()
        hist = eos.gd_edge_of_stability(apply, params0, x, y, cfg["lr"], steps=cfg["steps"], **kw)
        t_run = time.perf_counter() - t0
        if best is None or t_run < best[0]:
            best = (t_run, hist)
    t_pf, hist = best
    pf = dict(total=t_pf, gd=hist.config["time_gd_s"], eig=hist.config["time_eig_s"],
              solves=hist.config["eigen_solves"], hvps=hist.config["eigen_solves"] * cfg["num_iter"],
              compile=t_compile, loss=hist.loss[0],
              lam=hist.run(0)["eigenvalues"], eig_step=hist.run(0)["eig_step"])

    # ---- the PyTorch reference, same data, same initial parameters
    ref = None
    if not args.skip_reference:
        import torch

        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import torch_reference as tr

        torch.manual_seed(0)
        if args.threads:
            torch.set_num_threads(args.threads)
        tdev = "cuda" if (backend == "gpu" and torch.cuda.is_available()) else "cpu"
        torch.backends.cuda.matmul.allow_tf32 = bool(args.tf32)
        torch.backends.cudnn.allow_tf32 = bool(args.tf32)
        net = tr.fc_net(sizes).to(tdev)
        tr.load_jax_params(net, params0)
        X, Y, L = (torch.as_tensor(a, device=tdev) for a in (x, y, labels.astype(np.int64)))
        sync = torch.cuda.synchronize if tdev == "cuda" else (lambda: None)
        best = None
        for _ in range(args.repeat):
            tr.load_jax_params(net, params0)
            t0 = time.perf_counter()
            out = tr.train(net, X, Y, L, cfg["lr"], cfg["steps"], cfg["eig_every"], cfg["k"], batch=1000, sync=sync)
            t_run = time.perf_counter() - t0
            if best is None or t_run < best[0]:
                best = (t_run, out)
        t_ref, out = best
        ref = dict(total=t_ref, gd=out["time_gd"], eig=out["time_eig"],
                   solves=len(out["eig_step"]), hvps=int(out["hvps"].sum()), loss=out["loss"],
                   lam=out["eigenvalues"], eig_step=out["eig_step"], device=tdev,
                   threads=torch.get_num_threads(), version=torch.__version__)

    peak_measured = measured_matmul_peak()
    kind = getattr(device, "device_kind", str(device))
    peak_spec = next((v[1 if args.tf32 else 0] for k, v in PEAKS.items() if k in kind), None)
    return dict(cfg=cfg, sizes=sizes, D=D, flops=flops, backend=backend, device=kind, pf=pf, ref=ref,
                peak_measured=peak_measured, peak_spec=peak_spec, tf32=bool(args.tf32), repeat=args.repeat,
                jax_version=jax.__version__)


def print_training(res: dict) -> None:
    cfg, pf, ref, fl = res["cfg"], res["pf"], res["ref"], res["flops"]
    steps = cfg["steps"]
    print(f"\nworkload: synthetic CIFAR-shaped data, n = {cfg['n']}, fc-tanh {'-'.join(map(str, res['sizes']))} "
          f"(D = {res['D']:,}), square loss, h = {cfg['lr']}, {steps} steps, loss every step, "
          f"top-{cfg['k']} eigenvalues every {cfg['eig_every']} steps")
    prec = ("TF32 matmuls (JAX default precision; torch allow_tf32=True)" if res["tf32"] else
            "float32 (JAX matmul precision 'highest'; torch allow_tf32=False)")
    print(f"device: {res['backend']} ({res['device']}), precision: {prec}; jax {res['jax_version']}"
          + (f", torch {ref['version']} on {ref['device']} ({ref['threads']} threads, "
             f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'default')})" if ref else ""))
    per_hvp = lambda r: r["eig"] / max(r["hvps"], 1)  # noqa: E731
    rows = [  # (label, formatted value, number whose reference/pfcourse ratio is shown)
        ("total time [s]", lambda r: f"{r['total']:.2f}", lambda r: r["total"]),
        ("  GD steps incl. loss [s]", lambda r: f"{r['gd']:.2f}", lambda r: r["gd"]),
        ("  per step [ms]", lambda r: f"{1e3 * r['gd'] / (steps + 1):.2f}", lambda r: r["gd"]),
        ("  eigen-solves [s]", lambda r: f"{r['eig']:.2f}", lambda r: r["eig"]),
        ("  solves / HVPs", lambda r: f"{r['solves']} / {r['hvps']}", None),
        ("  per HVP [ms]", lambda r: f"{1e3 * per_hvp(r):.1f}", per_hvp),
        ("  GD / HVP throughput [GFLOP/s]", lambda r: f"{fl['gradient'] * (steps + 1) / r['gd'] / 1e9:.0f} / "
                                                      f"{fl['hvp'] / per_hvp(r) / 1e9:.0f}", None),
        ("lambda_0, lambda_1 at last solve", lambda r: ", ".join(f"{v:.4f}" for v in np.asarray(r["lam"])[-1]), None),
        ("final train loss", lambda r: f"{np.asarray(r['loss'])[-1]:.6f}", None),
    ]
    w = 34
    print(f"{'':{w}} {'PyTorch reference':>18} {'pfcourse':>12} {'ratio':>8}")
    for name, fmt, value in rows:
        a = fmt(ref) if ref else "-"
        ratio = f"{value(ref) / value(pf):.2f}x" if (ref and value) else ""
        print(f"{name:{w}} {a:>18} {fmt(pf):>12} {ratio:>8}")
    if ref:
        n = min(len(ref["loss"]), len(pf["loss"]))
        rel = np.max(np.abs(ref["loss"][:n] - pf["loss"][:n]) / np.abs(ref["loss"][:n]))
        lam_rel = np.max(np.abs(np.asarray(ref["lam"]) - np.asarray(pf["lam"])) / np.abs(np.asarray(ref["lam"])))
        print(f"agreement: max relative difference of the per-step loss {rel:.1e}, of the eigenvalues {lam_rel:.1e}")
    floor_steps = (steps + 1) * fl["gradient"]
    print(f"FLOPs: {fl['gradient'] / 1e9:.2f} GFLOP per gradient (forward {fl['forward'] / 1e9:.2f}); "
          f"the reference also runs a separate forward pass for the loss ({(fl['gradient'] + fl['forward']) / 1e9:.2f} "
          f"GFLOP per step); one HVP {fl['hvp'] / 1e9:.2f} GFLOP (throughputs above count these minimal FLOPs)")
    peaks = [("measured float32 matmul", res["peak_measured"])]
    if res["peak_spec"]:
        peaks.append(("data-sheet peak", res["peak_spec"]))
    for label, peak in peaks:
        floor = floor_steps / peak
        print(f"FLOP floor of the GD steps at the {label} ({peak / 1e12:.2f} TFLOP/s): {floor:.3f} s; "
              f"pfcourse's GD steps take {pf['gd'] / floor:.2f}x the floor"
              + (f", the reference's {ref['gd'] / floor:.2f}x" if ref else ""))
    print(f"(pfcourse compile time, not in the totals: {pf['compile']:.1f} s; best of {res['repeat']} run(s) each)")


def run_sharpness(args) -> list[dict]:
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree
    from scipy.sparse.linalg import LinearOperator, eigsh

    from pfcourse import data, eos, models, spectral

    ds = data.load_digits(500, 0, dtype=np.float64)
    params0 = models.init_mlp(jax.random.key(0), [64, 32, 32, 10], "tanh", dtype=jnp.float64)
    apply = models.mlp_apply("tanh")
    hist = eos.gd_edge_of_stability(apply, params0, ds.x_train, ds.y_train, 0.5, steps=400, eig_every=50,
                                    progress=False)
    params = jax.tree_util.tree_map(lambda a: a[0], hist.params)
    E = models.full_batch_loss(apply, ds.x_train, ds.y_train)
    flat, unravel = ravel_pytree(params)
    D = flat.shape[0]

    def timed(f, reps=3):
        out = jax.block_until_ready(f())  # compile
        best = np.inf
        for _ in range(reps):
            t0 = time.perf_counter()
            out = jax.block_until_ready(f())
            best = min(best, time.perf_counter() - t0)
        return out, best

    dense = jax.jit(lambda p: spectral.hessian_eigh(E, p)[0])
    lam_dense, t_dense = timed(lambda: dense(params), reps=1)  # forming H dominates: slow, time it once
    lam_dense = np.asarray(lam_dense)
    rows = [dict(method="dense eigh (exact)", hvps="-", time=t_dense, lam0=lam_dense[0], err0=0.0, err1=0.0)]
    for m in (10, 20, 40, 80):
        f = jax.jit(lambda p, m=m: spectral.top_hessian_eigenpairs(E, p, k=2, num_iter=m)[0])
        lam, t = timed(lambda: f(params))
        lam = np.asarray(lam)
        rows.append(dict(method=f"Lanczos, {m} iterations", hvps=m, time=t, lam0=lam[0],
                         err0=abs(lam[0] - lam_dense[0]) / lam_dense[0], err1=abs(lam[1] - lam_dense[1]) / lam_dense[1]))
    for m in (20, 100, 500):
        f = jax.jit(lambda p, m=m: spectral.sharpness(E, p, "power", num_iter=m))
        lam, t = timed(lambda: f(params))
        rows.append(dict(method=f"power iteration, {m} iterations", hvps=m, time=t, lam0=float(lam),
                         err0=abs(float(lam) - lam_dense[0]) / lam_dense[0], err1=None))
    grad = jax.grad(lambda v: E(unravel(v)))
    hvp = jax.jit(lambda v: jax.jvp(grad, (flat,), (v,))[1])
    hvp(flat).block_until_ready()
    count = [0]

    def mv(v):
        count[0] += 1
        return np.asarray(hvp(jnp.asarray(v.ravel())))

    t0 = time.perf_counter()
    vals = np.sort(eigsh(LinearOperator((D, D), matvec=mv, dtype=np.float64), 2, which="LA",
                         return_eigenvectors=False))[::-1]
    rows.append(dict(method="SciPy eigsh (ARPACK) on JAX HVPs", hvps=count[0], time=time.perf_counter() - t0,
                     lam0=vals[0], err0=abs(vals[0] - lam_dense[0]) / lam_dense[0],
                     err1=abs(vals[1] - lam_dense[1]) / lam_dense[1]))
    print(f"\nsharpness alone: 500 digits, 64-32-32-10 tanh (D = {D:,}), square loss, float64, after 400 GD steps "
          f"at h = 0.5 (h*lambda_0 = {0.5 * lam_dense[0]:.3f}; lambda_1/lambda_0 = {lam_dense[1] / lam_dense[0]:.3f}); "
          f"device: {jax.default_backend()}; best of 3 after compiling (dense: 1); Lanczos and power from a random start")
    print(f"{'method':36} {'HVPs':>6} {'time [ms]':>10} {'lambda_0':>12} {'rel. err λ0':>12} {'rel. err λ1':>12}")
    for r in rows:
        e1 = "-" if r["err1"] is None else f"{r['err1']:.1e}"
        print(f"{r['method']:36} {str(r['hvps']):>6} {1e3 * r['time']:10.1f} {r['lam0']:12.6f} {r['err0']:12.1e} {e1:>12}")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", choices=tuple(CONFIGS), default=None,
                   help="default: gpu-full on a GPU, cpu-small otherwise")
    p.add_argument("--part", choices=("training", "sharpness", "both"), default="both")
    p.add_argument("--steps", type=int, default=None, help="override the configuration's steps")
    p.add_argument("--tf32", action="store_true", help="TF32 matmuls in both implementations (GPU)")
    p.add_argument("--skip-reference", action="store_true", help="time pfcourse only (no torch needed)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--repeat", type=int, default=1, help="time each implementation this many times, keep the best")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--omp-active", action="store_true", help="keep OpenMP's busy-waiting (idle machines)")
    args = p.parse_args(argv)
    results = {}
    if args.part in ("training", "both"):
        import jax

        name = args.config or ("gpu-full" if jax.default_backend() == "gpu" else "cpu-small")
        cfg = dict(CONFIGS[name])
        if args.steps:
            cfg["steps"] = args.steps
        print(f"configuration {name}: {cfg}")
        res = run_training(cfg, args)
        print_training(res)
        results["training"] = {k: v for k, v in res.items() if k not in ("pf", "ref")}
        results["training"]["pf"] = {k: v for k, v in res["pf"].items() if k not in ("loss", "lam", "eig_step")}
        if res["ref"]:
            results["training"]["ref"] = {k: v for k, v in res["ref"].items() if k not in ("loss", "lam", "eig_step")}
    if args.part in ("sharpness", "both"):
        results["sharpness"] = run_sharpness(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    return 0


if __name__ == "__main__":
    sys.exit(main())
