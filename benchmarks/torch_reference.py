"""A faithful PyTorch reference of Cohen et al.'s edge-of-stability code, for the benchmark.

It reproduces, part by part, the solver of the authors' repository ``locuslab/edge-of-stability``
(read at commit 5fa3ece, files ``src/gd.py`` and ``src/utilities.py``), written afresh here:

==============================  =========================================================================
here                            the authors' code it follows
==============================  =========================================================================
``fc_net``                      ``src/archs.py``, ``fully_connected_net`` (``fc-tanh``): ``Flatten``, then
                                ``Linear`` + ``Tanh`` per hidden width, then ``Linear``; biases on
``square_loss``,                ``src/utilities.py``, ``SquaredLoss`` and ``SquaredAccuracy``: summed over
``square_accuracy``             the batch (``0.5 * sum (f - y)^2``; argmax of output against one-hot target)
``batches``                     ``iterate_dataset``: a ``DataLoader`` over the ``TensorDataset``,
                                ``shuffle=False``, physical batches of 1,000, moved to the device
``evaluate``                    ``compute_losses``: no-grad forward passes, each sum divided by the data
                                set size, accumulated as tensors
``hessian_vector_product``      ``compute_hvp``: per physical batch, ``grad`` of ``loss / n`` with
                                ``create_graph``, dot with the vector, ``grad`` again, summed
``top_eigenvalues``             ``lanczos`` and ``get_hessian_eigenvalues``: a SciPy ``LinearOperator``
                                built without a dtype (SciPy infers it by one product with a zero vector:
                                float32), ``eigsh(operator, neigs)`` with SciPy's defaults
                                (``which='LM'``, ``tol=0``: ARPACK to float32 machine precision),
                                eigenvectors computed, eigenvalues returned descending
``train``                       ``gd.py``, ``main``: a Python loop over steps; every step the train loss
                                and accuracy (and, if a test set is given, the test loss and accuracy);
                                every ``eig_freq`` steps the top eigenvalues on the first
                                ``abridged_size`` examples; the goals; ``zero_grad``, ``backward`` of
                                ``loss / n`` per physical batch, ``SGD.step``
==============================  =========================================================================

Deliberate differences, none of which changes the work done: a ``device`` argument instead of the
hard-coded ``.cuda()``; the data and the initial parameters are passed in (instead of
``load_dataset`` / ``load_architecture``), so the benchmark can start both programs from the same
point; nothing is written to disk (``save_freq = -1``; the final ``torch.save`` of the records is
left out) and no random projections of the iterates are taken (``nproj = 0``, the defaults); the
eigenvalue record has a row for every solve, so a solve at the last step fits (the authors' array
of ``max_steps // eig_freq`` rows overflows there).

Checked once against the authors' code itself (their ``gd.main`` run on the CPU with ``.cuda()``
mapped to the CPU, on the same synthetic data and start): see ``benchmarks/README.md``.

Run as a program it is the reference side of ``eos_benchmark.py``: it loads the data and the start
from an ``.npz`` file, trains, and writes its times and records to a JSON file::

    python benchmarks/torch_reference.py --data workload.npz --steps 100 --eig-every 50 --k 2 \\
        --lr 0.01 --json out.json

torch is not part of the book's environment: ``pip install -r benchmarks/requirements.txt``.
"""
from __future__ import annotations

import time

START = time.time()  # before torch is imported: the child's own record of its start

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
from typing import Sequence  # noqa: E402

if "OMP_WAIT_POLICY" not in os.environ:  # busy-waiting OpenMP threads: see eos_benchmark.py
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.sparse.linalg import LinearOperator, eigsh  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.utils import parameters_to_vector  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

IMPORTED = time.time()


def fc_net(sizes: Sequence[int], activation: str = "tanh") -> nn.Sequential:
    """``Flatten``, then ``Linear -> activation`` per hidden width, then ``Linear`` (archs.py)."""
    act = {"tanh": nn.Tanh, "relu": nn.ReLU}[activation]
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(a, b, bias=True), act()]
    layers.append(nn.Linear(sizes[-2], sizes[-1], bias=True))
    return nn.Sequential(*layers)


def load_params(net: nn.Sequential, arrays: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
    """Copy ``(w, b)`` pairs, ``w`` of shape ``(in, out)`` as pfcourse stores it, into the ``Linear`` layers."""
    linears = [m for m in net if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for lin, (w, b) in zip(linears, arrays):
            lin.weight.copy_(torch.as_tensor(np.ascontiguousarray(np.asarray(w).T)))
            lin.bias.copy_(torch.as_tensor(np.asarray(b)))


def square_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``0.5 * sum ||out - target||^2`` over the batch (SquaredLoss)."""
    return 0.5 * ((out - target) ** 2).sum()


def square_accuracy(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Number of examples whose largest output is the one-hot target's class (SquaredAccuracy)."""
    return (out.argmax(1) == target.argmax(1)).float().sum()


def batches(dataset: TensorDataset, batch: int, device):
    """The data set in order, ``batch`` examples at a time, on ``device`` (iterate_dataset)."""
    for X, Y in DataLoader(dataset, batch_size=batch, shuffle=False):
        yield X.to(device), Y.to(device)


def evaluate(net, dataset: TensorDataset, batch: int, device) -> list:
    """Mean loss and accuracy over ``dataset``, as tensors (compute_losses)."""
    totals = [0.0, 0.0]
    with torch.no_grad():
        for X, Y in batches(dataset, batch, device):
            out = net(X)
            for i, fn in enumerate((square_loss, square_accuracy)):
                totals[i] += fn(out, Y) / len(dataset)
    return totals


def hessian_vector_product(net, dataset: TensorDataset, vector: torch.Tensor, batch: int, device) -> torch.Tensor:
    """``H v`` of the mean loss by double back-propagation, physical batch by batch (compute_hvp)."""
    params = list(net.parameters())
    n = len(dataset)
    total = torch.zeros(len(parameters_to_vector(params)), dtype=torch.float, device=device)
    vector = vector.to(device)
    for X, Y in batches(dataset, batch, device):
        grads = torch.autograd.grad(square_loss(net(X), Y) / n, inputs=params, create_graph=True)
        dot = parameters_to_vector(grads).mul(vector).sum()
        second = torch.autograd.grad(dot, params, retain_graph=True)
        total += parameters_to_vector([g.contiguous() for g in second])
    return total


def top_eigenvalues(net, dataset: TensorDataset, neigs: int, batch: int, device) -> tuple[torch.Tensor, int]:
    """The ``neigs`` eigenvalues of largest magnitude by ARPACK, descending, and the number of HVPs
    (lanczos + get_hessian_eigenvalues; the count includes SciPy's dtype probe)."""
    count = 0

    def matvec(vec: np.ndarray):
        nonlocal count
        count += 1
        v = torch.tensor(vec, dtype=torch.float).to(device)
        return hessian_vector_product(net, dataset, v, batch, device).detach().cpu()

    dim = len(parameters_to_vector(net.parameters()))
    evals, evecs = eigsh(LinearOperator((dim, dim), matvec=matvec), neigs)
    del evecs  # computed as in the authors' code, not used for the eigenvalues
    return torch.from_numpy(np.ascontiguousarray(evals[::-1]).copy()).float(), count


def train(net, train_set: TensorDataset, lr: float, max_steps: int, neigs: int, eig_freq: int,
          test_set: TensorDataset | None = None, batch: int = 1000, abridged_size: int = 5000,
          acc_goal: float | None = None, loss_goal: float | None = None, device="cpu", sync=lambda: None) -> dict:
    """Full-batch GD as ``gd.main``: per step the losses, every ``eig_freq`` steps the top eigenvalues."""
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    abridged = TensorDataset(*(t[:abridged_size] for t in train_set.tensors))
    rec = {k: torch.zeros(max_steps) for k in ("train_loss", "train_acc", "test_loss", "test_acc")}
    eigs = torch.zeros((max_steps - 1) // eig_freq + 1, neigs)
    hvps, t_gd, t_eig = [], 0.0, 0.0
    for step in range(max_steps):
        t0 = time.perf_counter()
        rec["train_loss"][step], rec["train_acc"][step] = evaluate(net, train_set, batch, device)
        if test_set is not None:
            rec["test_loss"][step], rec["test_acc"][step] = evaluate(net, test_set, batch, device)
        t1 = time.perf_counter()
        if step % eig_freq == 0:
            eigs[step // eig_freq], count = top_eigenvalues(net, abridged, neigs, batch, device)
            hvps.append(count)
        t2 = time.perf_counter()
        t_gd, t_eig = t_gd + (t1 - t0), t_eig + (t2 - t1)
        if (loss_goal is not None and rec["train_loss"][step] < loss_goal) or \
                (acc_goal is not None and rec["train_acc"][step] > acc_goal):
            break
        opt.zero_grad()
        for X, Y in batches(train_set, batch, device):
            (square_loss(net(X), Y) / len(train_set)).backward()
        opt.step()
        sync()
        t_gd += time.perf_counter() - t2
    done = step + 1
    return dict(loss=rec["train_loss"][:done].numpy(), accuracy=rec["train_acc"][:done].numpy(),
                eig_step=np.arange(0, done, eig_freq), eigenvalues=eigs[: len(hvps)].numpy(),
                hvps=np.asarray(hvps), time_gd=t_gd, time_eig=t_eig, steps=done)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="The reference side of eos_benchmark.py (see the module docstring).")
    p.add_argument("--data", required=True, help=".npz with x, y (one-hot), optional x_test, y_test, and w0, b0, ...")
    p.add_argument("--steps", type=int, required=True, help="GD steps: the loop runs steps + 1 times (losses 0..steps)")
    p.add_argument("--eig-every", type=int, default=50)
    p.add_argument("--k", type=int, default=2)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--test", action="store_true", help="evaluate the test set every step, as gd.py does")
    p.add_argument("--runs", type=int, default=1, help="train this many times from the same start")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", required=True)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = False
    z = np.load(args.data)
    layers = [(z[f"w{i}"], z[f"b{i}"]) for i in range(sum(name.startswith("w") for name in z.files))]
    sizes = [layers[0][0].shape[0]] + [w.shape[1] for w, _ in layers]
    train_set = TensorDataset(torch.as_tensor(z["x"]), torch.as_tensor(z["y"]))
    test_set = TensorDataset(torch.as_tensor(z["x_test"]), torch.as_tensor(z["y_test"])) if args.test else None
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    runs = []
    for _ in range(args.runs):
        net = fc_net(sizes).to(args.device)
        load_params(net, layers)
        t0 = time.perf_counter()
        out = train(net, train_set, args.lr, args.steps + 1, args.k, args.eig_every, test_set, device=args.device,
                    sync=sync)
        runs.append(dict(total=time.perf_counter() - t0, gd=out["time_gd"], eig=out["time_eig"],
                         hvps=out["hvps"].tolist(), loss=out["loss"].tolist(), eigenvalues=out["eigenvalues"].tolist(),
                         eig_step=out["eig_step"].tolist(), end=time.time()))
    info = dict(start=START, imported=IMPORTED, torch=torch.__version__, threads=torch.get_num_threads(),
                device=args.device, runs=runs)
    with open(args.json, "w") as f:
        json.dump(info, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
