"""A player for a training run at the edge of stability (book: chapter 6, §Watch it happen).

It trains an MLP by full-batch gradient descent with :func:`pfcourse.eos.gd_edge_of_stability`
and plays the run back step by step: the sharpness against ``2/h``, the train loss, the projection
``u_0^T grad E`` and the PF coefficient ``alpha(h lambda_0)`` of the top direction
(:func:`pfcourse.plots.eos_dashboard`). Where it trains is chosen automatically and stated on
screen: fc-tanh on CIFAR-10 (first 5,000 images, Cohen et al.'s setting) when JAX sees a GPU,
scikit-learn's digits on CPU (or when CIFAR-10 cannot be downloaded).

Only ipywidgets core widgets are used (``Play``, ``IntSlider``, ``FloatLogSlider``, ``Button``,
``HTML``, ``Output``), so it runs in Colab and in Jupyter.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import data, eos, models, plots
from .explorer import figure_output

__all__ = ["default_setting", "eos_player", "train_for_player"]


def default_setting(backend: str | None = None) -> dict:
    """The run the player trains: CIFAR-10/fc-tanh on GPU, digits on CPU.

    GPU: fc-tanh (3072-200-200-10, tanh, biases), square loss, the first 5,000 CIFAR-10 images,
    h = 2/30. CPU: 64-100-100-10 tanh on 1,000 digits, h = 0.2. Both in float32, as Cohen et al.
    (2021), with the top-2 eigenvalues every 20 steps.
    """
    backend = jax.default_backend() if backend is None else backend
    if backend == "gpu":
        return dict(dataset="cifar10", n_train=5000, hidden=[200, 200], activation="tanh", h=2 / 30,
                    steps=2000, eig_every=20, k=2, num_iter=20, seed=0)
    return dict(dataset="digits", n_train=1000, hidden=[100, 100], activation="tanh", h=0.2,
                steps=1000, eig_every=20, k=2, num_iter=20, seed=0)


def describe(setting: dict, ds: data.Dataset, backend: str | None = None) -> str:
    """One line for the screen: device, data and model."""
    backend = jax.default_backend() if backend is None else backend
    sizes = [ds.input_dim, *setting["hidden"], ds.num_classes]
    where = "GPU found: " if backend == "gpu" else "no GPU (JAX backend: " + backend + "): "
    return (f"{where}training {'-'.join(map(str, sizes))} {setting['activation']} on {ds.note}; "
            f"square loss, float32, full-batch GD, h = {setting['h']:.4g}.")


def train_for_player(setting: dict | None = None, progress: bool = False, callback=None):
    """Load the data of ``setting`` (default :func:`default_setting`), train, and return ``(history, text)``."""
    setting = {**default_setting(), **(setting or {})}
    ds = data.load_dataset(setting["dataset"], n_train=setting["n_train"], n_test=0, dtype=np.float32)
    sizes = [ds.input_dim, *setting["hidden"], ds.num_classes]
    params = models.init_mlp(jax.random.key(setting["seed"]), sizes, setting["activation"], dtype=jnp.float32)
    hist = eos.gd_edge_of_stability(
        models.mlp_apply(setting["activation"]), params, ds.x_train, ds.y_train, setting["h"],
        labels=ds.labels_train, steps=setting["steps"], eig_every=setting["eig_every"], k=setting["k"],
        num_iter=setting["num_iter"], on_divergence="stop", progress=progress, callback=callback)
    return hist, describe(setting, ds)


def eos_player(history: eos.EoSHistory | None = None, text: str | None = None, run: int = 0,
               setting: dict | None = None, train: bool = True) -> Any:
    """The widget: a header saying what runs where, a learning-rate slider with a Train button,
    and Play / step slider over the four panels of :func:`pfcourse.plots.eos_dashboard`.

    Args:
        history: a finished run to play (e.g. the chapter's); if ``None`` and ``train``, the
            :func:`default_setting` run is trained first.
        text: the header line for ``history``.
        run: which learning rate of ``history`` to play.
        setting: overrides of :func:`default_setting` for the Train button.
        train: train the default run at once when no ``history`` is given.

    Returns:
        an ``ipywidgets.VBox``; its ``.state`` dict holds the current history.
    """
    player = _Player({**default_setting(), **(setting or {})}, run)
    if history is not None:
        player.load(history, text or f"a recorded run, h = {float(history.h[run]):.4g}")
    elif train:
        player.train()
    else:
        player.header.value = f"<b>{describe_default()}</b>"
        player.status.value = "press Train"
    return player.box


class _Player:
    """The widgets of :func:`eos_player` and what its buttons do."""

    def __init__(self, setting: dict, run: int):
        import ipywidgets as W

        self.setting = setting
        self.header, self.status, self.out = W.HTML(), W.HTML(), W.Output()
        self.lr = W.FloatLogSlider(value=setting["h"], base=10, min=-2.5, max=0, step=0.01, description="h",
                                   readout_format=".3g", continuous_update=False)
        self.button = W.Button(description="Train", tooltip="train with this learning rate", icon="play")
        self.play = W.Play(value=0, min=0, max=1, step=1, interval=120, description="play")
        self.slider = W.IntSlider(value=0, min=0, max=1, step=1, description="frame", continuous_update=True)
        W.jslink((self.play, "value"), (self.slider, "value"))
        self.state: dict = {"history": None, "update": None, "fig": None, "frames": np.array([0]), "run": run}
        self.slider.observe(lambda change: self.show(change["new"]), names="value")
        self.button.on_click(self.train)
        self.box = W.VBox([self.header, W.HBox([self.lr, self.button]), self.status,
                           W.HBox([self.play, self.slider]), self.out])
        self.box.state = self.state

    def show(self, step_index: int):
        state = self.state
        if state["update"] is None:
            return
        state["update"](int(state["frames"][min(step_index, len(state["frames"]) - 1)]))
        # set the Output's content directly: capturing with `with out:` makes a headless nbclient
        # (the book build) answer with comm messages, which can deadlock it (jupyter/nbclient#312)
        self.out.outputs = (figure_output(state["fig"]),)

    def load(self, hist, line: str):
        import matplotlib.pyplot as plt

        state = self.state
        if state["fig"] is not None:
            plt.close(state["fig"])
        state["history"] = hist
        fig, update = plots.eos_dashboard(hist, state["run"], width=8.5, height=5.2)
        plt.close(fig)  # shown through the Output widget only
        state["fig"], state["update"] = fig, update
        last = int(hist.stop_step[state["run"]])
        state["frames"] = np.unique(np.linspace(0, last, min(last + 1, 120)).round().astype(int))
        self.header.value = f"<b>{line}</b>"
        self.status.value = hist.status[state["run"]] if hist.status[state["run"]] != "steps" else \
            f"trained {last} steps; press play or drag the slider"
        self.play.max = self.slider.max = len(state["frames"]) - 1
        self.slider.value = self.slider.max
        self.show(self.slider.value)

    def report(self, info: dict):
        self.status.value = (f"training: step {int(info['step'])}, loss {float(info['loss'][0]):.4g}, "
                             f"sharpness {float(info['sharpness'][0]):.3g} (2/h = {2 / float(info['h'][0]):.3g})")

    def train(self, _=None):
        self.button.disabled = True
        self.status.value = "training ..."
        try:
            self.state["run"] = 0
            self.load(*train_for_player({**self.setting, "h": float(self.lr.value)}, callback=self.report))
        finally:
            self.button.disabled = False


def describe_default() -> str:
    """What the Train button will do on this machine, before any data is loaded."""
    s = default_setting()
    if jax.default_backend() == "gpu":
        return f"GPU found: Train runs fc-tanh on the first {s['n_train']} CIFAR-10 images (digits if it cannot be downloaded)."
    return f"No GPU (JAX backend: {jax.default_backend()}): Train runs a 64-100-100-10 tanh net on {s['n_train']} digits."
