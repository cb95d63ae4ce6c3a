r"""Multi-layer perceptrons in plain JAX, and the losses of full-batch training.

Parameters are a list of layers, each a dict ``{"w": (fan_in, fan_out), "b": (fan_out,)}`` (``"b"``
absent without biases): a pytree that :mod:`pfcourse.flows` and :mod:`pfcourse.spectral` accept as
is. The network is

.. math:: f(x) = W_L^\top\,\sigma(\cdots\sigma(W_1^\top x + b_1)\cdots) + b_L,

with the activation :math:`\sigma` after every layer but the last. ``fc-tanh`` of Cohen et al.
(2021) is ``init_mlp(key, [3072, 200, 200, 10], "tanh")``.

=============================  ==============================================================  =========
function                       computes                                                        book
=============================  ==============================================================  =========
:func:`init_mlp`               PyTorch's default init :math:`U(\pm 1/\sqrt{\text{fan\_in}})`    chapter 6
:func:`mlp`                    the network's outputs                                           chapter 6
:func:`square_loss`            :math:`\frac1n\sum_i \frac12\lVert f(x_i) - e_{y_i}\rVert^2`    chapter 6
:func:`cross_entropy_loss`     :math:`\frac1n\sum_i -\log\operatorname{softmax}(f(x_i))_{y_i}` chapter 6
:func:`accuracy`               fraction of :math:`\arg\max f(x_i) = y_i`                       chapter 6
:func:`full_batch_loss`        :math:`E(\theta)` over a whole data set (an equinox Module)     chapter 6
=============================  ==============================================================  =========
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._checks import check_int

PyTree = Any
Apply = Callable[[PyTree, jax.Array], jax.Array]

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "elu": jax.nn.elu,
    "softplus": jax.nn.softplus,
    "sigmoid": jax.nn.sigmoid,
    "identity": lambda z: z,
}
LOSSES = ("square", "cross_entropy")

__all__ = [
    "ACTIVATIONS",
    "FullBatchLoss",
    "LOSSES",
    "MLPApply",
    "accuracy",
    "cross_entropy_loss",
    "full_batch_loss",
    "init_mlp",
    "loss_and_accuracy",
    "loss_function",
    "mlp",
    "mlp_apply",
    "num_params",
    "square_loss",
]


def _activation(activation) -> Callable[[jax.Array], jax.Array]:
    if callable(activation):
        return activation
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {tuple(ACTIVATIONS)} or pass a function.")
    return ACTIVATIONS[activation]


def init_mlp(key: jax.Array, sizes: Sequence[int], activation: str = "tanh", bias: bool = True,
             dtype=None) -> list[dict[str, jax.Array]]:
    r"""Parameters of an MLP with layer widths ``sizes = [d_in, h_1, ..., d_out]``, PyTorch-style.

    Every weight and bias entry of layer :math:`\ell` is drawn independently from
    :math:`U(-1/\sqrt{n_\ell}, 1/\sqrt{n_\ell})`, :math:`n_\ell` its fan-in: the default of
    ``torch.nn.Linear`` (``kaiming_uniform_(a=√5)`` gives that bound for the weight), as used by
    Cohen et al. (2021). The activation does not change the init; it is accepted so that a call
    reads like the architecture (and is checked).

    Args:
        key: a PRNG key.
        sizes: at least two positive widths.
        activation: a name in ``ACTIVATIONS`` (or a function), checked only.
        bias: include biases.
        dtype: float dtype (default: JAX's default float).

    Returns:
        a list of ``len(sizes) - 1`` dicts ``{"w": (n_in, n_out), "b": (n_out,)}``.

    Book: chapter 6, §The experiment.
    """
    _activation(activation)
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2 or any(s < 1 for s in sizes):
        raise ValueError(f"sizes must list at least two positive widths [d_in, ..., d_out], got {sizes}.")
    dtype = jax.dtypes.canonicalize_dtype(jnp.float64 if dtype is None else dtype)
    params = []
    for n_in, n_out, k in zip(sizes[:-1], sizes[1:], jax.random.split(key, len(sizes) - 1)):
        kw, kb = jax.random.split(k)
        bound = 1.0 / math.sqrt(n_in)
        layer = {"w": jax.random.uniform(kw, (n_in, n_out), dtype, -bound, bound)}
        if bias:
            layer["b"] = jax.random.uniform(kb, (n_out,), dtype, -bound, bound)
        params.append(layer)
    return params


def mlp(params: Sequence[dict], x: jax.Array, activation="tanh") -> jax.Array:
    r"""Outputs :math:`f(x)` of the MLP: :math:`z \leftarrow \sigma(z W_\ell + b_\ell)` for all but the
    last layer, which is linear.

    Args:
        params: from :func:`init_mlp`.
        x: inputs, shape ``(n, d_in)`` or ``(d_in,)``.
        activation: a name in ``ACTIVATIONS`` or a function.

    Returns:
        outputs, shape ``(n, d_out)`` or ``(d_out,)``.

    Book: chapter 6, §The experiment.
    """
    act = _activation(activation)
    if not params:
        raise ValueError("mlp: params is empty; build them with init_mlp.")
    x = jnp.asarray(x)
    d_in = params[0]["w"].shape[0]
    if x.shape[-1] != d_in:
        raise ValueError(f"mlp: inputs have {x.shape[-1]} features but the first layer expects {d_in}.")
    z = x.astype(params[0]["w"].dtype)
    for i, layer in enumerate(params):
        z = z @ layer["w"]
        if "b" in layer:
            z = z + layer["b"]
        if i < len(params) - 1:
            z = act(z)
    return z


def tanh_pole_distance(params: Sequence[dict], x: jax.Array) -> jax.Array:
    r"""How near a tanh MLP at complex parameters comes to a pole of its activation: the smallest
    distance, over the examples ``x`` and every hidden unit, from a pre-activation :math:`z` to the
    nearest pole of :math:`\tanh`,

    .. math:: \min_{k \in \mathbb{Z}} \bigl|z - i\pi\bigl(k + \tfrac12\bigr)\bigr| .

    A real network is at least :math:`\pi/2` away; along the principal flow's complex path the loss and
    its Hessian blow up as this goes to 0 (chapter 8's toy meets the same pole).

    >>> import jax.numpy as jnp
    >>> layer = {"w": jnp.array([[1j]]), "b": jnp.array([0.0])}
    >>> round(float(tanh_pole_distance([layer, layer], jnp.array([[1.5]]))), 4)
    0.0708

    Book: appendix A, §A pole of tanh.
    """
    z = jnp.asarray(x).astype(jnp.result_type(params[0]["w"], complex))
    nearest = jnp.inf
    for layer in params[:-1]:
        z = z @ layer["w"] + layer.get("b", 0.0)
        pole = 1j * jnp.pi * (jnp.round(z.imag / jnp.pi - 0.5) + 0.5)
        nearest = jnp.minimum(nearest, jnp.min(jnp.abs(z - pole)))
        z = jnp.tanh(z)
    return nearest


@dataclasses.dataclass(frozen=True)
class MLPApply:
    """``apply(params, x) = mlp(params, x, activation)``: the network as data, equal by its activation.

    Two instances with the same activation compare (and hash) equal, so compiled code that takes
    the network as a static argument (e.g. :func:`pfcourse.training.train`) is reused across calls
    without any cache keyed on function identity."""

    activation: Any = "tanh"

    def __call__(self, params: Sequence[dict], x: jax.Array) -> jax.Array:
        return mlp(params, x, self.activation)


def mlp_apply(activation="tanh") -> MLPApply:
    """``apply(params, x) = mlp(params, x, activation)``, the form :func:`full_batch_loss` takes
    (an :class:`MLPApply`: equal activations give equal objects, so compiled code is reused)."""
    _activation(activation)
    return MLPApply(activation)


def num_params(params: PyTree) -> int:
    """Total number of parameters ``D`` of a pytree."""
    return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(params)))


def square_loss(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    r"""Square loss, mean over examples of half the squared error,

    .. math:: E = \frac1n\sum_{i=1}^n \tfrac12\,\lVert f(x_i) - e_{y_i}\rVert^2 ,

    with one-hot targets :math:`e_{y_i}` (Cohen et al., 2021). Integer labels are one-hot encoded.

    Book: chapter 6, eq. ``eq-eos-square-loss``.
    """
    outputs = jnp.asarray(outputs)
    targets = jnp.asarray(targets)
    if targets.ndim == outputs.ndim - 1 and jnp.issubdtype(targets.dtype, jnp.integer):
        targets = jax.nn.one_hot(targets, outputs.shape[-1], dtype=outputs.dtype)
    if targets.shape != outputs.shape:
        raise ValueError(f"square_loss: targets of shape {targets.shape} do not match outputs {outputs.shape}.")
    return 0.5 * jnp.mean(jnp.sum((outputs - targets) ** 2, axis=-1))


def cross_entropy_loss(outputs: jax.Array, labels: jax.Array) -> jax.Array:
    r"""Softmax cross-entropy, mean over examples,

    .. math:: E = \frac1n\sum_i \Big(\log\sum_c e^{f_c(x_i)} - f_{y_i}(x_i)\Big),

    for integer ``labels`` of shape ``(n,)``; for float targets ``p`` of shape ``(n, C)`` (one-hot
    or soft) it is :math:`-\frac1n\sum_i\sum_c p_{ic}\log\operatorname{softmax}(f(x_i))_c`.

    Book: chapter 6, §The experiment.
    """
    outputs = jnp.asarray(outputs)
    labels = jnp.asarray(labels)
    logp = jax.nn.log_softmax(outputs, axis=-1)
    if jnp.issubdtype(labels.dtype, jnp.integer):
        if labels.shape != outputs.shape[:-1]:
            raise ValueError(f"cross_entropy_loss: labels of shape {labels.shape} do not match outputs {outputs.shape}.")
        return -jnp.mean(jnp.take_along_axis(logp, labels[..., None], axis=-1))
    if labels.shape != outputs.shape:
        raise ValueError(f"cross_entropy_loss: targets of shape {labels.shape} do not match outputs {outputs.shape}.")
    return -jnp.mean(jnp.sum(labels * logp, axis=-1))


def accuracy(outputs: jax.Array, labels: jax.Array) -> jax.Array:
    r"""Fraction of examples whose largest output is the label, :math:`\frac1n\sum_i[\arg\max_c f_c(x_i) = y_i]`.

    ``labels`` may be integers ``(n,)`` or one-hot ``(n, C)``.

    Book: chapter 6, §The experiment.
    """
    outputs = jnp.asarray(outputs)
    labels = jnp.asarray(labels)
    if labels.ndim == outputs.ndim:
        labels = jnp.argmax(labels, axis=-1)
    return jnp.mean(jnp.argmax(outputs, axis=-1) == labels)


def loss_function(kind: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """``square_loss`` or ``cross_entropy_loss`` by name (``"square"``, ``"cross_entropy"``)."""
    if kind not in LOSSES:
        raise ValueError(f"unknown loss {kind!r}; choose one of {LOSSES}.")
    return square_loss if kind == "square" else cross_entropy_loss


def full_batch_loss(apply: Apply, x, y, kind: str = "square", chunk_size: int | None = None) -> FullBatchLoss:
    r"""The full-batch loss :math:`E(\theta) = \frac1n\sum_{i=1}^n \ell(f_\theta(x_i), y_i)` as a function of the parameters.

    The returned ``E(params)`` is a plain scalar function of the parameters, which
    :func:`pfcourse.flows.gradient_descent`, :func:`pfcourse.spectral.hvp`,
    :func:`pfcourse.spectral.sharpness` and friends take as they are. It is a
    :class:`FullBatchLoss`, an equinox Module that holds the data as arrays, so that jit-compiled
    code which takes it as an argument (:func:`pfcourse.training.train`) compiles once for every
    data set of the same shapes.

    With ``chunk_size``, the examples are processed ``chunk_size`` at a time by ``lax.map`` (zero
    weight on padding), each chunk rematerialised (``jax.checkpoint``) in the backward pass, which
    bounds the memory of gradients and Hessian-vector products on large data sets; the value is
    the same sum, in a different order.

    Args:
        apply: ``apply(params, x) -> outputs``, e.g. :func:`mlp_apply`.
        x: inputs ``(n, d)``.
        y: one-hot targets ``(n, C)`` (or integer labels) for ``"square"``; integer labels (or
            one-hot / soft targets) for ``"cross_entropy"``.
        kind: ``"square"`` or ``"cross_entropy"``.
        chunk_size: optional number of examples per chunk.

    Returns:
        ``E(params) -> scalar``.

    Book: chapter 6, eq. ``eq-eos-square-loss``.
    """
    return loss_and_accuracy(apply, x, y, None, kind, chunk_size, with_accuracy=False)


def loss_and_accuracy(apply: Apply, x, y, labels=None, kind: str = "square", chunk_size: int | None = None,
                      *, with_accuracy: bool = True) -> FullBatchLoss:
    r"""``f(params) -> (E(params), accuracy)`` over the whole data set, in one forward pass.

    Like :func:`full_batch_loss` (same arguments, same chunking), and also returns the accuracy
    against ``labels`` (default: ``argmax`` of one-hot ``y``, or ``y`` itself if it holds integers).
    ``jax.value_and_grad(f, has_aux=True)`` gives loss, accuracy and gradient together.

    Book: chapter 6, §The experiment.
    """
    loss_function(kind)
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    n = x.shape[0]
    if y.shape[0] != n:
        raise ValueError(f"full_batch_loss: {n} inputs but {y.shape[0]} targets.")
    if n == 0:
        raise ValueError("full_batch_loss: the data set is empty.")
    if labels is None:
        labels = y if jnp.issubdtype(y.dtype, jnp.integer) else jnp.argmax(y, axis=-1)
    labels = jnp.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {labels.shape}.")
    if chunk_size is not None:
        check_int(chunk_size, "chunk_size", hint="It is the number of examples per chunk of the loss (None: all at once).")
    if chunk_size is None or chunk_size >= n:
        return FullBatchLoss(apply, x, y, labels, jnp.ones(n, bool), kind, None, n, with_accuracy)
    chunks = -(-n // chunk_size)
    pad = chunks * chunk_size - n

    def split(a):
        a = jnp.concatenate([a, jnp.zeros((pad,) + a.shape[1:], a.dtype)])
        return a.reshape((chunks, chunk_size) + a.shape[1:])

    return FullBatchLoss(apply, split(x), split(y), split(labels), split(jnp.ones(n, bool)), kind, int(chunk_size),
                         n, with_accuracy)


class FullBatchLoss(eqx.Module):
    r"""The full-batch loss as data: :math:`E(\theta)` (and the accuracy) of ``apply`` on one data set.

    Built by :func:`full_batch_loss` (``E(params) -> scalar``) and :func:`loss_and_accuracy`
    (``f(params) -> (E, accuracy)``). The data are array fields, everything else is static, so two
    losses on data of the same shapes share one compilation when passed to a jitted function.
    With ``chunk_size`` the arrays are stored split into chunks of ``chunk_size`` examples
    (``weights`` is zero on the padding).
    """

    apply: Apply = eqx.field(static=True)
    x: jax.Array
    y: jax.Array
    labels: jax.Array
    weights: jax.Array
    kind: str = eqx.field(static=True)
    chunk_size: int | None = eqx.field(static=True)
    n: int = eqx.field(static=True)
    with_accuracy: bool = eqx.field(static=True)

    def __call__(self, params: PyTree):
        loss = loss_function(self.kind)
        if self.chunk_size is None:
            out = self.apply(params, self.x)
            value = loss(out, self.y)
            return (value, accuracy(out, self.labels)) if self.with_accuracy else value

        @jax.checkpoint
        def chunk_sums(xc, yc, lc, wc):
            out = self.apply(params, xc)
            per = jax.vmap(lambda o, t: loss(o[None], t[None]))(out, yc)
            correct = (jnp.argmax(out, axis=-1) == lc) & wc
            return jnp.sum(jnp.where(wc, per, 0)), jnp.sum(correct)

        sums, correct = jax.lax.map(lambda a: chunk_sums(*a), (self.x, self.y, self.labels, self.weights))
        value = jnp.sum(sums) / self.n
        return (value, jnp.sum(correct) / self.n) if self.with_accuracy else value
