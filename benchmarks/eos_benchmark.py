#!/usr/bin/env python3
"""Benchmark: pfcourse against a faithful PyTorch reference of Cohen et al.'s code, and sharpness alone.

Part 1 (``--part training``): the edge-of-stability workload of Cohen et al. (ICLR 2021): fc-tanh
(3072-200-200-10), square loss, full-batch GD with h = 0.01, the train loss and accuracy every step
and the top-2 Hessian eigenvalues every 50 steps, on synthetic CIFAR-shaped data
(``pfcourse.data.load_synthetic_cifar``: the content does not change the cost), both programs from
the same start. The two programs run as whole processes, as a user runs them (interpreter start,
imports, data, compilation, the run), alternating, for ``--rounds`` rounds:

- the reference: ``torch_reference.py``, which reproduces the authors' ``src/gd.py`` and
  ``src/utilities.py`` (float32 ARPACK ``eigsh(which='LM')`` on their HVP operator, the loss and
  accuracy by a separate pass every step; ``--test`` adds their per-step test-set evaluation);
- pfcourse: ``eos.gd_edge_of_stability`` in a fresh process, twice: once with an empty persistent
  compilation cache (what a first run costs) and once with the cache that run filled (every later
  run of the same shapes).

Each child runs the workload twice in a row (``--child-runs``); "whole process" is the time from the
parent's spawn to the end of the first run, "warm" the second run (same work, compiled). The table
gives the median and range over rounds of each, two ratios (whole process and warm; the range is
over rounds), the agreement of the two programs, and the FLOP floor of the GD steps: the time their
matrix products take alone, each timed at its own shape by a JAX matmul measured quietly before the
rounds start. Configurations:

- ``cpu-small``: 1,000 examples, 100 steps, 3 eigen-solves (about 6 minutes a round trio on 2 cores);
- ``gpu-full``: 5,000 examples (the paper's CIFAR-10 subset size), 1,000 steps, 21 eigen-solves;
- ``tiny``: a smoke test (seconds); it shrinks parts 2 and 3 too, and if the reference's interpreter
  cannot import torch it skips the reference and prints why (at the other sizes that is an error
  unless ``--skip-reference``). ``tests/test_benchmarks.py`` runs every part at this size.

Part 2 (``--part sharpness``): the sharpness at one point near the edge of stability (500 digits,
64-32-32-10 tanh, float64, after 400 steps at h = 0.5) by dense ``eigh`` (exact), Lanczos with
10-80 iterations, power iteration with 20-500 iterations, and SciPy's ``eigsh`` on the same HVPs.

Part 3 (``--part cli``): ``python -m pfcourse eos --dataset digits --steps 100`` without the
compilation cache, with an empty one and with a filled one, alternating, ``--rounds`` rounds.

Precision: float32 for part 1, true float32 on GPUs (JAX matmul precision ``highest``, torch
``allow_tf32=False``).

    pip install -r benchmarks/requirements.txt     # torch, for the reference (or a separate venv)
    .venv/bin/python benchmarks/eos_benchmark.py --part training --rounds 3 --reference-python /work/venv-bench/bin/python
"""
from __future__ import annotations

import time

START = time.time()  # a child's own record of its start (before numpy, jax or pfcourse load)

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

# OpenMP threads that busy-wait make PyTorch on a shared CPU many times slower (measured here: a
# 200x3072 @ 3072x32 matmul takes 24 ms instead of 1.1 ms with 2 threads on a loaded 2-core
# machine). Passive waiting is set before torch loads (children inherit it); --omp-active keeps
# OpenMP's default.
if "--omp-active" not in sys.argv:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIGS = {
    "tiny": dict(n=200, hidden=[32, 32], steps=20, eig_every=10, k=2, lr=0.01, num_iter=20),
    "cpu-small": dict(n=1000, hidden=[200, 200], steps=100, eig_every=50, k=2, lr=0.01, num_iter=20),
    "gpu-full": dict(n=5000, hidden=[200, 200], steps=1000, eig_every=50, k=2, lr=0.01, num_iter=20),
}
# Parts 2 and 3 at their own sizes: ``tiny`` shrinks them to a smoke test too (numbers meaningless).
SHARPNESS = dict(n=500, hidden=[32, 32], steps=400, lanczos=(10, 20, 40, 80), power=(20, 100, 500))
SHARPNESS_TINY = dict(n=100, hidden=[8, 8], steps=20, lanczos=(10,), power=(20,))
CLI_STEPS, CLI_STEPS_TINY = 100, 5
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
    """FLOPs of one full-batch gradient of an MLP, of one HVP, and the gradient's matmul shapes.

    With ``L_l = 2 n d_in d_out`` the cost of layer l's matrix product: forward ``sum L_l``;
    backward: the weight gradients ``sum L_l`` and, for every layer but the first, the gradient
    with respect to its input, ``sum_{l>=2} L_l``. A Hessian-vector product by forward over reverse
    with the primal pass linearised once (as in ``spectral.top_hessian_eigenpairs``) pushes a
    tangent through both passes: the first layer has a constant input, so ``x dW_1`` and
    ``x^T d(delta_1)``, ``2 L_1``; every other layer has two products per product of the gradient,
    ``6 L_l``. Element-wise work (tanh, biases, the loss) is O(n * widths), negligible, not counted.
    ``shapes`` lists the gradient's products as ``(m, k, n)`` for ``(m, k) @ (k, n)``.
    """
    layer = [2 * n * a * b for a, b in zip(sizes[:-1], sizes[1:])]
    forward = sum(layer)
    backward = sum(layer) + sum(layer[1:])
    shapes = [(n, a, b) for a, b in zip(sizes[:-1], sizes[1:])]  # forward: X W
    shapes += [(a, n, b) for a, b in zip(sizes[:-1], sizes[1:])]  # weight gradients: X^T G
    shapes += [(n, b, a) for a, b in list(zip(sizes[:-1], sizes[1:]))[1:]]  # input gradients: G W^T
    return dict(forward=forward, gradient=forward + backward, hvp=2 * layer[0] + 6 * sum(layer[1:]), shapes=shapes)


# --------------------------------------------------------------------------- children (one process each)


def child_prepare(cfg: dict, out: str) -> None:
    """The workload's data and start, for the reference (pfcourse's child makes its own, identically)."""
    import jax
    import jax.numpy as jnp

    from pfcourse import data, models

    ds = data.load_synthetic_cifar(cfg["n"], n_test=1000, seed=0, dtype=np.float32)
    params = models.init_mlp(jax.random.key(0), [3072, *cfg["hidden"], 10], "tanh", dtype=jnp.float32)
    layers = {f"{name}{i}": np.asarray(p[name]) for i, p in enumerate(params) for name in ("w", "b")}
    np.savez(out, x=ds.x_train, y=ds.y_train, labels=ds.labels_train, x_test=ds.x_test, y_test=ds.y_test, **layers)


def child_peak(cfg: dict, out: str, reps: int = 7) -> None:
    """Best time of each of the gradient's matmuls at its own shape (JAX, float32, precision highest)."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_default_matmul_precision", "highest")
    fl = mlp_flops(cfg["n"], [3072, *cfg["hidden"], 10])
    f = jax.jit(lambda a, b: a @ b)
    rows = []
    for m, k, n in fl["shapes"]:
        a, b = jnp.ones((m, k), jnp.float32), jnp.ones((k, n), jnp.float32)
        f(a, b).block_until_ready()
        best = np.inf
        for _ in range(reps):
            t0 = time.perf_counter()
            f(a, b).block_until_ready()
            best = min(best, time.perf_counter() - t0)
        rows.append(dict(shape=[m, k, n], seconds=best, flops=2 * m * k * n))
    dev = jax.devices()[0]
    with open(out, "w") as fh:
        json.dump(dict(rows=rows, device=getattr(dev, "device_kind", str(dev)), backend=jax.default_backend()), fh)


def child_pfcourse(cfg: dict, out: str, runs: int, cache: str | None) -> None:
    """pfcourse as a user runs it: import, data, model, ``gd_edge_of_stability`` (``runs`` times)."""
    if cache:
        from pfcourse._cache import enable_compilation_cache

        enable_compilation_cache(cache)
    import jax
    import jax.numpy as jnp

    from pfcourse import data, eos, models

    imported = time.time()
    jax.config.update("jax_default_matmul_precision", "highest")
    ds = data.load_synthetic_cifar(cfg["n"], n_test=1000, seed=0, dtype=np.float32)
    params = models.init_mlp(jax.random.key(0), [3072, *cfg["hidden"], 10], "tanh", dtype=jnp.float32)
    result = []
    for _ in range(runs):
        t0 = time.perf_counter()
        hist = eos.gd_edge_of_stability(models.mlp_apply("tanh"), params, ds.x_train, ds.y_train, cfg["lr"],
                                        labels=ds.labels_train, steps=cfg["steps"], eig_every=cfg["eig_every"],
                                        k=cfg["k"], num_iter=cfg["num_iter"], progress=False)
        c = hist.config
        run = hist.run(0)
        hvps = c.get("lanczos_iterations", c["eigen_solves"] * c["num_iter"])
        result.append(dict(total=time.perf_counter() - t0, gd=c["time_gd_s"], eig=c["time_eig_s"],
                           solves=c["eigen_solves"], hvps=int(np.sum(hvps)), loss=np.asarray(run["loss"]).tolist(),
                           eigenvalues=np.asarray(run["eigenvalues"]).tolist(), end=time.time()))
    with open(out, "w") as fh:
        json.dump(dict(start=START, imported=imported, jax=jax.__version__, backend=jax.default_backend(),
                       runs=result), fh)


# --------------------------------------------------------------------------- the parent


def spawn(cmd: list[str], out: str, timeout: float) -> dict:
    """Run one child; its JSON plus ``spawned`` (the parent's clock at the start) and ``exited``."""
    t0 = time.time()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    exited = time.time()
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed ({done.returncode}):\n{done.stderr[-3000:]}")
    with open(out) as fh:
        info = json.load(fh)
    return dict(info, spawned=t0, exited=exited)


def load_average() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "n/a"


def summarise(child: dict) -> dict:
    """Whole process (spawn to the end of the first run), import, warm run and its parts."""
    runs = child["runs"]
    warm = runs[-1]
    return dict(whole=runs[0]["end"] - child["spawned"], imported=child["imported"] - child["spawned"],
                first=runs[0]["total"], warm=warm["total"], gd=warm["gd"], eig=warm["eig"],
                hvps=int(np.sum(warm["hvps"])), solves=len(warm["eigenvalues"]), loss=warm["loss"],
                eigenvalues=warm["eigenvalues"])


def torch_missing(python: str) -> str | None:
    """Why ``python`` cannot run the PyTorch reference (``None`` if it can import torch)."""
    done = subprocess.run([python, "-c", "import torch, scipy"], capture_output=True, text=True)
    if done.returncode == 0:
        return None
    last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
    return (f"{python} cannot import torch and scipy ({last}); install them with `pip install -r "
            "benchmarks/requirements.txt scipy` (or name another interpreter by --reference-python)")


def check_reference(args) -> None:
    """Skip the reference, saying why, if its interpreter lacks torch: at ``tiny`` (a smoke test)
    by itself, at the real sizes only if asked by ``--skip-reference`` (else stop and say so)."""
    if args.skip_reference:
        return
    why = torch_missing(args.reference_python)
    if why is None:
        return
    if args.config_name != "tiny":
        raise SystemExit(f"eos_benchmark: no reference: {why}; or time pfcourse alone with --skip-reference.")
    print(f"reference skipped (smoke size): {why}", flush=True)
    args.skip_reference = True


def run_rounds(cfg: dict, args, work: str) -> dict:
    """Alternate the programs for ``args.rounds`` rounds; the order flips every round."""
    me = [sys.executable, os.path.abspath(__file__), "--config", args.config_name]
    programs = {}
    if not args.skip_reference:
        ref_cmd = [args.reference_python, os.path.join(HERE, "torch_reference.py"), "--data",
                   os.path.join(work, "workload.npz"), "--steps", str(cfg["steps"]), "--eig-every",
                   str(cfg["eig_every"]), "--k", str(cfg["k"]), "--lr", str(cfg["lr"]), "--runs",
                   str(args.child_runs), "--json", os.path.join(work, "ref.json"), "--device", args.reference_device]
        programs["reference"] = (ref_cmd + (["--test"] if args.test else []), os.path.join(work, "ref.json"))
    pf = me + ["--child", "pfcourse", "--child-runs", str(args.child_runs), "--out", os.path.join(work, "pf.json")]
    results = {name: [] for name in ("reference", "pfcourse, empty cache", "pfcourse, filled cache")}
    for r in range(args.rounds):
        cache = os.path.join(work, f"jax-cache-{r}")
        order = [("pfcourse, empty cache", pf + ["--compile-cache", cache]),
                 ("pfcourse, filled cache", pf + ["--compile-cache", cache])]
        if programs:
            order = [("reference", programs["reference"][0])] + order if r % 2 == 0 else order + [
                ("reference", programs["reference"][0])]
        for name, cmd in order:
            out = programs["reference"][1] if name == "reference" else os.path.join(work, "pf.json")
            before = load_average()
            res = summarise(spawn(cmd, out, args.timeout))
            res["load"] = (before, load_average())
            results[name].append(res)
            print(f"  round {r + 1}: {name:24} whole {res['whole']:7.2f} s, warm {res['warm']:7.2f} s "
                  f"(load {before} -> {res['load'][1]})", flush=True)
    return {k: v for k, v in results.items() if v}


def med_range(values, fmt="{:.2f}") -> str:
    v = np.asarray(values, dtype=float)
    return f"{fmt.format(np.median(v))} ({fmt.format(v.min())}-{fmt.format(v.max())})"


def print_training(cfg: dict, res: dict, peak: dict, args) -> dict:
    """The table: medians and ranges over rounds, the two ratios, the FLOP floor, the agreement."""
    sizes = [3072, *cfg["hidden"], 10]
    fl, steps = mlp_flops(cfg["n"], sizes), cfg["steps"]
    floor_grad = sum(r["seconds"] for r in peak["rows"])  # one gradient's matmuls, each at its quiet best
    peak_flops = sum(r["flops"] for r in peak["rows"]) / floor_grad
    print(f"\nworkload: synthetic CIFAR-shaped data, n = {cfg['n']}, fc-tanh {'-'.join(map(str, sizes))}, square loss, "
          f"h = {cfg['lr']}, {steps} steps (losses at 0..{steps}), top-{cfg['k']} eigenvalues every {cfg['eig_every']} "
          f"steps; {args.rounds} rounds, programs alternating, each a whole process; pfcourse Lanczos "
          f"{cfg['num_iter']} iterations a solve; reference {'with' if args.test else 'without'} test-set evaluation")
    names = list(res)
    print(f"{'':32}" + "".join(f"{n:>26}" for n in names))
    rows = [("whole process [s]", lambda r: r["whole"]), ("  of which start + imports [s]", lambda r: r["imported"]),
            ("first run, in process [s]", lambda r: r["first"]), ("warm run [s]", lambda r: r["warm"]),
            ("  GD steps incl. loss [s]", lambda r: r["gd"]), ("  eigen-solves [s]", lambda r: r["eig"])]
    for label, get in rows:
        print(f"{label:32}" + "".join(f"{med_range([get(r) for r in res[n]]):>26}" for n in names))
    print(f"{'  solves / HVPs':32}" + "".join(f"{str(res[n][-1]['solves']) + ' / ' + str(res[n][-1]['hvps']):>26}"
                                               for n in names))
    gd_rate = lambda r, extra: (steps + 1) * (fl["gradient"] + extra) / r["gd"] / 1e9  # noqa: E731
    hvp_rate = lambda r: r["hvps"] * fl["hvp"] / r["eig"] / 1e9  # noqa: E731
    print(f"{'  GD / HVP GFLOP/s (warm)':32}" + "".join(
        f"{med_range([gd_rate(r, fl['forward'] if n == 'reference' else 0) for r in res[n]], '{:.0f}')} / "
        f"{np.median([hvp_rate(r) for r in res[n]]):.0f}".rjust(26) for n in names))
    summary = {}
    if "reference" in res:
        for n in names[1:]:
            whole = [a["whole"] / b["whole"] for a, b in zip(res["reference"], res[n])]
            summary[f"whole process, {n}"] = whole
        summary["warm (same work, compiled)"] = [a["warm"] / b["warm"] for a, b in
                                                 zip(res["reference"], res["pfcourse, empty cache"])]
        print("ratio, reference time / pfcourse time, median (range) over rounds:")
        for label, v in summary.items():
            print(f"  {label:40} {med_range(v)}x")
    floor = (steps + 1) * floor_grad
    pf = res["pfcourse, empty cache"] + res.get("pfcourse, filled cache", [])
    print(f"FLOP floor of the {steps + 1} gradients: their matmuls, each timed alone at its shape before the rounds "
          f"(load {peak['load']}): {1e3 * floor_grad:.2f} ms a gradient ({fl['gradient'] / 1e9:.2f} GFLOP, "
          f"{peak_flops / 1e12:.3f} TFLOP/s), {floor:.3f} s in all; pfcourse's GD steps take "
          f"{med_range([r['gd'] / floor for r in pf])}x the floor"
          + (f", the reference's {med_range([r['gd'] / floor for r in res['reference']])}x" if "reference" in res else ""))
    kind = peak.get("device", "")
    spec = next((v[0] for k, v in PEAKS.items() if k in kind), None)
    if spec:
        print(f"FLOP floor at the data-sheet float32 peak of the {kind} ({spec / 1e12:.0f} TFLOP/s): "
              f"{(steps + 1) * fl['gradient'] / spec:.3f} s; pfcourse's GD steps take "
              f"{med_range([r['gd'] * spec / ((steps + 1) * fl['gradient']) for r in pf])}x that")
    lz = [hvp_rate(r) / gd_rate(r, 0) for r in pf]
    print(f"pfcourse's Lanczos phase runs at {med_range(lz, '{:.0%}')} of its GD phase's GFLOP/s "
          f"(HVP {fl['hvp'] / 1e9:.2f} GFLOP; Lanczos' own vector work not counted)")
    if "reference" in res:
        a, b = res["reference"][-1], pf[-1]
        n = min(len(a["loss"]), len(b["loss"]))
        rel = np.max(np.abs(np.subtract(a["loss"][:n], b["loss"][:n])) / np.abs(a["loss"][:n]))
        m = min(len(a["eigenvalues"]), len(b["eigenvalues"]))
        lam_a, lam_b = np.asarray(a["eigenvalues"][:m]), np.asarray(b["eigenvalues"][:m])
        print(f"agreement: per-step loss to {rel:.1e} (relative), eigenvalues to "
              f"{np.max(np.abs(lam_a - lam_b) / np.abs(lam_a)):.1e}; last solve: reference "
              f"{', '.join(f'{v:.4f}' for v in lam_a[-1])}, pfcourse {', '.join(f'{v:.4f}' for v in lam_b[-1])}")
    return dict(ratios=summary, floor_per_gradient_s=floor_grad, peak_flops=peak_flops, lanczos_over_gd=lz,
                peak_spec=spec, backend=peak.get("backend"), device=kind, flops=fl)


def run_training(cfg: dict, args) -> dict:
    check_reference(args)
    with tempfile.TemporaryDirectory() as work:
        me = [sys.executable, os.path.abspath(__file__), "--config", args.config_name]
        subprocess.run(me + ["--child", "prepare", "--out", os.path.join(work, "workload.npz")], check=True)
        load = load_average()
        subprocess.run(me + ["--child", "peak", "--out", os.path.join(work, "peak.json")], check=True)
        with open(os.path.join(work, "peak.json")) as fh:
            peak = dict(json.load(fh), load=f"{load} -> {load_average()}")
        print(f"quiet matmul peak measured (load {peak['load']}); rounds:", flush=True)
        res = run_rounds(cfg, args, work)
    out = print_training(cfg, res, peak, args)
    return dict(cfg=cfg, peak=peak, rounds=res, **out)


def run_sharpness(args) -> list[dict]:
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree
    from scipy.sparse.linalg import LinearOperator, eigsh

    from pfcourse import data, eos, models, spectral

    cfg = SHARPNESS_TINY if args.config_name == "tiny" else SHARPNESS
    ds = data.load_digits(cfg["n"], 0, dtype=np.float64)
    params0 = models.init_mlp(jax.random.key(0), [64, *cfg["hidden"], 10], "tanh", dtype=jnp.float64)
    apply = models.mlp_apply("tanh")
    hist = eos.gd_edge_of_stability(apply, params0, ds.x_train, ds.y_train, 0.5, steps=cfg["steps"],
                                    eig_every=50, progress=False)
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
    for m in cfg["lanczos"]:
        f = jax.jit(lambda p, m=m: spectral.top_hessian_eigenpairs(E, p, k=2, num_iter=m)[0])
        lam, t = timed(lambda: f(params))
        lam = np.asarray(lam)
        rows.append(dict(method=f"Lanczos, {m} iterations", hvps=m, time=t, lam0=lam[0],
                         err0=abs(lam[0] - lam_dense[0]) / lam_dense[0], err1=abs(lam[1] - lam_dense[1]) / lam_dense[1]))
    for m in cfg["power"]:
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
    net = "-".join(map(str, [64, *cfg["hidden"], 10]))
    print(f"\nsharpness alone: {cfg['n']} digits, {net} tanh (D = {D:,}), square loss, float64, after {cfg['steps']} GD steps "
          f"at h = 0.5 (h*lambda_0 = {0.5 * lam_dense[0]:.3f}; lambda_1/lambda_0 = {lam_dense[1] / lam_dense[0]:.3f}); "
          f"device: {jax.default_backend()}; best of 3 after compiling (dense: 1); Lanczos and power from a random start")
    print(f"{'method':36} {'HVPs':>6} {'time [ms]':>10} {'lambda_0':>12} {'rel. err λ0':>12} {'rel. err λ1':>12}")
    for r in rows:
        e1 = "-" if r["err1"] is None else f"{r['err1']:.1e}"
        print(f"{r['method']:36} {str(r['hvps']):>6} {1e3 * r['time']:10.1f} {r['lam0']:12.6f} {r['err0']:12.1e} {e1:>12}")
    return rows


def run_cli(args) -> dict:
    """``python -m pfcourse eos --dataset digits --steps 100``: no cache, empty cache, filled cache."""
    steps = CLI_STEPS_TINY if args.config_name == "tiny" else CLI_STEPS
    base = [sys.executable, "-m", "pfcourse", "eos", "--dataset", "digits", "--steps", str(steps), "--lr", "0.2",
            "--quiet", "--no-plot"]
    times = {"no compilation cache": [], "empty cache (first run)": [], "filled cache": []}
    with tempfile.TemporaryDirectory() as work:
        for r in range(args.rounds):
            cache = os.path.join(work, f"cache-{r}")
            for name, extra in (("no compilation cache", ["--no-compile-cache"]),
                                ("empty cache (first run)", ["--compile-cache", cache]),
                                ("filled cache", ["--compile-cache", cache])):
                t0 = time.perf_counter()
                subprocess.run(base + extra + ["--out", os.path.join(work, "out")], check=True, capture_output=True)
                times[name].append(time.perf_counter() - t0)
    print(f"\n{' '.join(base[1:])} (load {load_average()}), median (range) over {args.rounds} rounds:")
    for name, v in times.items():
        print(f"  {name:26} {med_range(v)} s")
    return times


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", choices=tuple(CONFIGS), default=None,
                   help="default: gpu-full on a GPU, cpu-small otherwise")
    p.add_argument("--part", choices=("training", "sharpness", "cli", "all"), default="training")
    p.add_argument("--rounds", type=int, default=3, help="rounds of alternating whole-process runs")
    p.add_argument("--child-runs", type=int, default=2, help="runs inside each child: the last is the warm one")
    p.add_argument("--reference-python", default=sys.executable, help="the interpreter with torch for the reference")
    p.add_argument("--reference-device", default=None, help="torch device of the reference (default: cuda for "
                   "gpu-full, else cpu)")
    p.add_argument("--skip-reference", action="store_true", help="time pfcourse only (no torch needed)")
    p.add_argument("--test", action="store_true", help="the reference also evaluates 1,000 test examples every step")
    p.add_argument("--timeout", type=float, default=1800, help="seconds allowed for one child")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--omp-active", action="store_true", help="keep OpenMP's busy-waiting (idle machines)")
    p.add_argument("--child", choices=("prepare", "peak", "pfcourse"), default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--compile-cache", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.config is None:
        import jax

        args.config = "gpu-full" if jax.default_backend() == "gpu" else "cpu-small"
    args.config_name, cfg = args.config, dict(CONFIGS[args.config])
    if args.reference_device is None:
        args.reference_device = "cuda" if args.config == "gpu-full" else "cpu"
    if args.child:
        {"prepare": lambda: child_prepare(cfg, args.out), "peak": lambda: child_peak(cfg, args.out),
         "pfcourse": lambda: child_pfcourse(cfg, args.out, args.child_runs, args.compile_cache)}[args.child]()
        return 0
    results = {}
    if args.part in ("training", "all"):
        print(f"configuration {args.config}: {cfg}")
        results["training"] = run_training(cfg, args)
    if args.part in ("cli", "all"):
        results["cli"] = run_cli(args)
    if args.part in ("sharpness", "all"):
        results["sharpness"] = run_sharpness(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    return 0


if __name__ == "__main__":
    sys.exit(main())
