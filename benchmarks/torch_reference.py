"""A PyTorch reference implementation of Cohen et al.'s edge-of-stability experiment (ICLR 2021).

Written for the benchmark from the paper's description of its method, not copied from its code:

- full-batch gradient descent with a Python loop over steps; the gradient is accumulated over
  "physical" batches of 1,000 examples (``loss / n`` per batch, ``backward`` into ``.grad``);
- the train loss and accuracy are computed every step by a separate forward pass over the data;
- every ``eig_every`` steps the top-k Hessian eigenvalues by Lanczos: SciPy's ``eigsh`` (ARPACK,
  implicitly restarted Lanczos, run to its default tolerance) on a ``LinearOperator`` whose matvec
  is a Hessian-vector product by double back-propagation, accumulated over batches of 1,000;
- fc-tanh (``nn.Linear`` + ``nn.Tanh``, PyTorch's default initialisation) and the square loss
  ``0.5 * ||f(x) - onehot(y)||^2`` averaged over examples.

torch is not part of the book's environment: ``pip install -r benchmarks/requirements.txt``.
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, eigsh
from torch import nn
from torch.nn.utils import parameters_to_vector


def fc_net(sizes: Sequence[int], activation: str = "tanh") -> nn.Sequential:
    """``Linear -> act -> ... -> Linear`` with PyTorch's default initialisation."""
    act = {"tanh": nn.Tanh, "relu": nn.ReLU}[activation]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b, bias=True))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


def load_jax_params(net: nn.Sequential, params) -> None:
    """Copy pfcourse MLP parameters (list of ``{"w": (in, out), "b": (out,)}``) into ``net``."""
    linears = [m for m in net if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for lin, layer in zip(linears, params):
            lin.weight.copy_(torch.as_tensor(np.asarray(layer["w"]).T.copy()))
            lin.bias.copy_(torch.as_tensor(np.asarray(layer["b"]).copy()))


def square_loss_sum(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``0.5 * sum ||out - target||^2`` (divide by n for the mean)."""
    return 0.5 * ((out - target) ** 2).sum()


def batches(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def loss_and_accuracy(net, X, Y, labels, batch: int = 1000) -> tuple[float, float]:
    """A separate forward pass over the data, as the reference records the loss every step."""
    total, correct = 0.0, 0
    with torch.no_grad():
        for s in batches(X.shape[0], batch):
            out = net(X[s])
            total += float(square_loss_sum(out, Y[s]))
            correct += int((out.argmax(1) == labels[s]).sum())
    return total / X.shape[0], correct / X.shape[0]


def hvp(net, X, Y, vector: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """Hessian-vector product of the mean square loss by double back-propagation, batch by batch."""
    params = [p for p in net.parameters() if p.requires_grad]
    n = X.shape[0]
    out = torch.zeros_like(vector)
    for s in batches(n, batch):
        loss = square_loss_sum(net(X[s]), Y[s]) / n
        grads = torch.autograd.grad(loss, params, create_graph=True)
        dot = parameters_to_vector(grads).mul(vector).sum()
        second = torch.autograd.grad(dot, params, retain_graph=True)
        out += parameters_to_vector([g.contiguous() for g in second])
    return out


def top_eigenvalues(net, X, Y, k: int = 2, batch: int = 1000) -> tuple[np.ndarray, int]:
    """Top-k Hessian eigenvalues by ARPACK Lanczos (``eigsh``) on HVPs; returns them and the HVP count."""
    dim = sum(p.numel() for p in net.parameters())
    device = next(net.parameters()).device
    dtype = next(net.parameters()).dtype
    count = 0

    def matvec(v):
        nonlocal count
        count += 1
        t = torch.as_tensor(np.asarray(v, dtype=np.float64).ravel(), dtype=dtype, device=device)
        return hvp(net, X, Y, t, batch).cpu().double().numpy()

    op = LinearOperator((dim, dim), matvec=matvec, dtype=np.float64)
    vals = eigsh(op, k, which="LA", return_eigenvectors=False)
    return np.sort(vals)[::-1], count


def train(net, X, Y, labels, lr: float, steps: int, eig_every: int = 50, k: int = 2, batch: int = 1000,
          accuracy_goal: float | None = None, sync=lambda: None) -> dict:
    """Full-batch GD with the loss every step and top-k eigenvalues every ``eig_every`` steps."""
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    n = X.shape[0]
    loss_hist, acc_hist, eig_steps, eigs, hvps = [], [], [], [], []
    t_gd = t_eig = 0.0
    for step in range(steps + 1):
        if step % eig_every == 0:
            sync()
            t0 = time.perf_counter()
            vals, count = top_eigenvalues(net, X, Y, k, batch)
            sync()
            t_eig += time.perf_counter() - t0
            eig_steps.append(step)
            eigs.append(vals)
            hvps.append(count)
        t0 = time.perf_counter()
        loss, acc = loss_and_accuracy(net, X, Y, labels, batch)
        loss_hist.append(loss)
        acc_hist.append(acc)
        if step == steps or (accuracy_goal is not None and acc >= accuracy_goal):
            t_gd += time.perf_counter() - t0
            break
        opt.zero_grad()
        for s in batches(n, batch):
            (square_loss_sum(net(X[s]), Y[s]) / n).backward()
        opt.step()
        sync()
        t_gd += time.perf_counter() - t0
    return dict(loss=np.asarray(loss_hist), accuracy=np.asarray(acc_hist), eig_step=np.asarray(eig_steps),
                eigenvalues=np.asarray(eigs), hvps=np.asarray(hvps), time_gd=t_gd, time_eig=t_eig)
