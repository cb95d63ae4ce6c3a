"""Command line: ``python -m pfcourse eos ...`` (or the ``pfcourse`` script).

Runs full-batch gradient descent on a data set with the sharpness tracked
(:func:`pfcourse.eos.gd_edge_of_stability`) and writes to ``--out``:

- ``eos.npz``: every recorded array (loss, accuracy, projections, eigenvalues, ... per run);
- ``eos.json``: the configuration, a summary per learning rate, and the per-run records;
- ``eos.png``: sharpness against ``2/h``, train loss, and ``u_0^T grad E`` of the largest ``h``.

Examples::

    python -m pfcourse eos --dataset digits --lr 0.2 0.3 --steps 1500 --out runs/digits
    python -m pfcourse eos --dataset cifar10 --n-train 5000 --hidden 200 200 --lr 0.01 \\
        --steps 100000 --eig-every 50 --goal 0.99 --out runs/cifar  # Cohen et al.'s README command (GPU)
    python -m pfcourse eos --dataset synthetic-cifar --n-train 1000 --lr 0.01 --steps 100 \\
        --eig-every 50 --out runs/bench  # the workload of benchmarks/eos_benchmark.py, no download

``--dataset cifar10`` never trains on something else silently: if CIFAR-10 is neither cached nor
downloadable the command stops (exit 2) and says how to get it, unless ``--fallback digits`` asks
for the digits instead. Compiled programs are kept in JAX's persistent compilation cache
(:mod:`pfcourse._cache`: ``~/.cache/pfcourse/jax`` or ``$PFCOURSE_CACHE/jax``; ``--compile-cache``
chooses the folder, ``--no-compile-cache`` turns it off), so a second run with the same shapes
skips XLA compilation.

Presentation layer: uses :mod:`pfcourse.data`, :mod:`pfcourse.models`, :mod:`pfcourse.eos` and
:mod:`pfcourse.plots`. Book: chapter 6.
"""
from __future__ import annotations

import argparse
import os
import sys

__all__ = ["build_parser", "main", "run_eos"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pfcourse", description="pfcourse experiments from the command line.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("eos", help="full-batch GD at the edge of stability, sharpness tracked",
                       description="Full-batch gradient descent on an MLP with the top Hessian eigenvalues "
                                   "tracked by Lanczos (Cohen et al., ICLR 2021); writes eos.npz, eos.json, eos.png.")
    p.add_argument("--dataset", choices=("digits", "cifar10", "synthetic-cifar"), default="digits",
                   help="synthetic-cifar: CIFAR-shaped standard normal inputs, labels of a random linear teacher "
                        "(data seed 0: the benchmark's workload, no download)")
    p.add_argument("--fallback", choices=("digits",), default=None,
                   help="if CIFAR-10 cannot be had, train on this instead (default: stop with an error)")
    p.add_argument("--n-train", type=int, default=None,
                   help="training examples (default 1000 digits, 5000 CIFAR-10 and synthetic-cifar)")
    p.add_argument("--classes", type=int, nargs="+", default=None, help="keep only these classes")
    p.add_argument("--hidden", type=int, nargs="*", default=None,
                   help="hidden widths (default 100 100 for digits, 200 200 for CIFAR-shaped data: fc-tanh)")
    p.add_argument("--activation", default="tanh", help="tanh, relu, gelu, elu, softplus, sigmoid, identity")
    p.add_argument("--no-bias", action="store_true", help="layers without biases")
    p.add_argument("--loss", choices=("square", "cross_entropy"), default="square")
    p.add_argument("--lr", type=float, nargs="+", default=[0.2, 0.3], help="one or more learning rates h")
    p.add_argument("--steps", type=int, default=1500, help="most GD steps per run")
    p.add_argument("--eig-every", type=int, default=20, help="steps between eigen-solves")
    p.add_argument("--k", type=int, default=2, help="number of top Hessian eigenpairs")
    p.add_argument("--num-iter", type=int, default=20, help="Lanczos iterations per solve")
    p.add_argument("--goal", type=float, default=None, help="stop a run at this train accuracy (e.g. 0.99)")
    p.add_argument("--chunk-size", type=int, default=None, help="examples per chunk in the loss (memory)")
    p.add_argument("--max-parallel", type=int, default=None, help="most learning rates run together (vmap)")
    p.add_argument("--seed", type=int, default=0, help="initialisation seed")
    p.add_argument("--float64", action="store_true", help="compute in float64 (default float32)")
    p.add_argument("--precision", choices=("default", "high", "highest"), default="highest",
                   help="JAX matmul precision; on GPUs 'default' allows TF32 (default here: highest, true float32)")
    p.add_argument("--cache-dir", default=None, help="CIFAR-10 cache folder (checked before anything runs)")
    p.add_argument("--compile-cache", default=None, metavar="DIR",
                   help="JAX compilation cache folder (default $PFCOURSE_JAX_CACHE, $PFCOURSE_CACHE/jax or "
                        "~/.cache/pfcourse/jax)")
    p.add_argument("--no-compile-cache", action="store_true", help="compile afresh, keep nothing on disk")
    p.add_argument("--no-download", action="store_true", help="never download CIFAR-10")
    p.add_argument("--out", default="eos-results", help="output folder (created and checked for writing before training)")
    p.add_argument("--no-plot", action="store_true", help="skip eos.png")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def run_eos(args: argparse.Namespace) -> int:
    """Run ``pfcourse eos`` with parsed arguments, with JAX's persistent compilation cache on (unless
    ``--no-compile-cache``); JAX's global settings, the cache's included, are restored afterwards."""
    import jax

    from ._cache import compilation_cache

    saved = jax.config.jax_enable_x64, jax.config.jax_default_matmul_precision
    try:
        if args.float64:
            jax.config.update("jax_enable_x64", True)
        jax.config.update("jax_default_matmul_precision", args.precision)
        with compilation_cache(args.compile_cache, enabled=not args.no_compile_cache):
            return _run_eos(args)
    finally:
        jax.config.update("jax_enable_x64", saved[0])
        jax.config.update("jax_default_matmul_precision", saved[1])


def _run_eos(args: argparse.Namespace) -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from . import data, eos, models

    dtype = np.float64 if args.float64 else np.float32
    problem = _check_folders(args)
    if problem:  # before any work: a run that cannot be saved is lost
        print(f"pfcourse eos: {problem}", file=sys.stderr)
        return 2
    try:
        ds = data.load_dataset(args.dataset, n_train=args.n_train, classes=args.classes, n_test=0,
                               fallback=args.fallback == "digits", cache_dir=args.cache_dir,
                               download=not args.no_download, dtype=dtype)
    except data.DatasetUnavailableError as err:
        print(f"pfcourse eos: CIFAR-10 is not available: {err}\n  To go on: connect to the network and run "
              "again; or put the archive in the cache folder named above (--cache-dir chooses it); or train on "
              "--dataset synthetic-cifar (CIFAR-shaped, no download) or --fallback digits.", file=sys.stderr)
        return 2
    except ValueError as err:
        print(f"pfcourse eos: {err}", file=sys.stderr)
        return 2
    hidden = args.hidden if args.hidden is not None else ([200, 200] if ds.input_dim == 3072 else [100, 100])
    sizes = [ds.input_dim, *hidden, ds.num_classes]
    print(f"data: {ds.note}")
    print(f"model: {'-'.join(map(str, sizes))} {args.activation}, {args.loss} loss, {np.dtype(dtype).name}, "
          f"backend {jax.default_backend()}, matmul precision {args.precision}")
    try:
        params = models.init_mlp(jax.random.key(args.seed), sizes, args.activation, bias=not args.no_bias,
                                 dtype=jnp.dtype(dtype))
        hist = eos.gd_edge_of_stability(
            models.mlp_apply(args.activation), params, ds.x_train, ds.y_train, args.lr,
            labels=ds.labels_train, loss=args.loss, steps=args.steps, eig_every=args.eig_every, k=args.k,
            num_iter=args.num_iter, accuracy_goal=args.goal, chunk_size=args.chunk_size,
            max_parallel=args.max_parallel, on_divergence="stop", progress=not args.quiet)
    except ValueError as err:
        print(f"pfcourse eos: {err}", file=sys.stderr)
        return 2
    hist.config.update(dataset=ds.name, data_note=ds.note, sizes=sizes, activation=args.activation,
                       bias=not args.no_bias, seed=args.seed)
    paths = hist.save(args.out)
    if not args.no_plot:
        paths["png"] = _plot(hist, os.path.join(args.out, "eos.png"))
    print(f"{'h':>8} {'2/h':>8} {'settled λ0':>11} {'hλ0/2':>7} {'steps':>6} {'loss':>9} {'acc':>6}  status")
    for row in hist.summary():
        print(f"{row['h']:8.4g} {row['two_over_h']:8.3f} {row['settled_sharpness']:11.3f} "
              f"{row['settled_ratio']:7.3f} {row['steps']:6d} {row['final_loss']:9.4g} "
              f"{row['final_accuracy']:6.3f}  {row['status']}")
    for kind, path in paths.items():
        print(f"wrote {path}")
    return 3 if any(s.startswith("diverged") for s in hist.status) else 0


def _check_folders(args: argparse.Namespace) -> str | None:
    """What is wrong with ``--out`` or ``--cache-dir`` (checked before any data or training), or ``None``."""
    problem = _unwritable(args.out)
    if problem:
        return f"--out {args.out!r} is not a writable folder ({problem}); pass another --out."
    if args.cache_dir is not None:
        from .data import cache_dir

        folder = cache_dir(args.cache_dir)
        blocker = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if blocker is not None and not blocker.is_dir():
            return (f"--cache-dir {args.cache_dir!r}: {blocker} is a file, not a folder, so the cache_dir cannot "
                    "be created there; pass another --cache-dir.")
    return None


def _unwritable(folder: str) -> str | None:
    """Why files cannot be written into ``folder`` (created if missing), or ``None`` if they can."""
    import tempfile

    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        return f"{type(err).__name__}: {err.strerror or err}"
    return None


def _plot(hist, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from . import plots

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    plots.eos_sharpness(axes[0], hist)
    axes[0].legend(fontsize=8)
    axes[0].set_title(r"sharpness (dashed: $2/h$)", fontsize=9)
    plots.eos_loss(axes[1], hist)
    axes[1].set_title("train loss", fontsize=9)
    i = int(np.argmax(hist.h))
    r = hist.run(i)
    axes[2].plot(r["step"], r["projection"], color="black", lw=0.6)
    axes[2].set_title(rf"$u_0^\top\nabla E$, $h = {r['h']:.3g}$", fontsize=9)
    axes[2].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "eos":
        return run_eos(args)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
