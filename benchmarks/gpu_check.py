#!/usr/bin/env python3
"""The GPU path in one command: ``python3 dev.py gpu`` (``--dry-run``: the same on CPU at tiny sizes).

On a machine with an NVIDIA GPU it runs, each step in its own process with a time limit and all of
them within one budget (8 minutes by default), then prints one table (step, status, seconds, result)
and exits 1 if any step failed:

1. ``install``: the CUDA build of the jax pinned in ``requirements.txt`` into this venv,
   ``pip install -c requirements.txt "jax[cuda13]==<pin>" "jaxlib==<pin>"`` (``cuda12`` when the
   driver's CUDA is 12.x, read from ``nvidia-smi``; ``--cuda`` chooses), skipped when JAX already
   sees a GPU at the pinned version; jax and everything else stay at their pins;
2. ``backend``: JAX must report ``jax.default_backend() == "gpu"``, or the run stops here with why;
3. ``CIFAR-10``: the archive is downloaded into the cache (``pfcourse.data.download_cifar10``); if it
   cannot be, the player step trains on synthetic CIFAR-shaped data and the table says so;
4. ``chapter 6``: ``book/06_edge_of_stability.md`` executed top to bottom in a fresh kernel (jupytext
   and nbclient, as ``python3 dev.py check``), timed; its player picks the GPU setting itself;
5. ``EoS player``: ``train_for_player(default_setting("gpu"))``, fc-tanh on the first 5,000 CIFAR-10
   images (or synthetic CIFAR-shaped data), 2,000 steps, the top-2 eigenvalues every 20;
6. ``EoS benchmark``: ``benchmarks/eos_benchmark.py --config gpu-full --part training`` (with the
   PyTorch reference only if torch with CUDA is installed; ``--no-reference`` skips it).

``--dry-run`` does the same on the CPU (``JAX_PLATFORMS=cpu``) with no install and no download
(CIFAR-10 only if already cached, else synthetic data), a smoke notebook of chapter 6's package
calls at tiny sizes instead of the chapter (``--full-chapter`` executes the chapter itself, about a
minute on two cores), the player's GPU setting shrunk (200 examples, 3072-32-32-10, 50 steps) and
the benchmark's ``tiny`` configuration. Logs of every step go to ``_build/gpu_check/``.

    python3 dev.py gpu              # on the GPU machine
    python3 dev.py gpu --dry-run    # anywhere, about a minute
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = ROOT / "book" / "06_edge_of_stability.md"
BENCHMARK = ROOT / "benchmarks" / "eos_benchmark.py"
MARK = "GPUCHECK "  # a child's result: one line, this prefix, then JSON
# per-step time limits in seconds at the default budget (scaled with --budget; each is also cut to
# what is left of the budget)
BUDGET = {"gpu": 480.0, "dry": 240.0}
CAPS = {"gpu": dict(install=300, backend=90, data=120, chapter=300, player=180, benchmark=240),
        "dry": dict(install=0, backend=60, data=30, chapter=120, player=90, benchmark=90)}
DRY_PLAYER = dict(n_train=200, hidden=[32, 32], steps=50, eig_every=10)  # the GPU setting, shrunk


# --------------------------------------------------------------------------- children (run in their own process)


def _emit(result: dict) -> None:
    print(MARK + json.dumps(result, default=lambda o: o.item() if hasattr(o, "item") else str(o)), flush=True)


def child_backend(_: dict) -> None:
    import importlib.metadata as md

    import jax

    plugins = sorted(f"{d.metadata['Name']} {d.version}" for d in md.distributions()
                     if (d.metadata["Name"] or "").lower().startswith(("jax-cuda", "jax_cuda")))
    torch = None
    try:
        import torch as _torch

        torch = dict(version=_torch.__version__, cuda=bool(_torch.cuda.is_available()))
    except Exception:  # not installed, or broken: the benchmark runs without its reference
        pass
    devices = jax.devices()
    _emit(dict(backend=jax.default_backend(), jax=jax.__version__, jaxlib=md.version("jaxlib"), plugins=plugins,
               devices=[getattr(d, "device_kind", str(d)) for d in devices], torch=torch))


def child_data(opts: dict) -> None:
    from pfcourse import data

    path = data.cifar10_archive_path()
    if opts["dry"] and not path.exists():
        _emit(dict(available=False, reason=f"not cached at {path}; the dry run does not download"))
        return
    try:
        data.download_cifar10(timeout=opts.get("timeout", 30.0), progress=False)
        _emit(dict(available=True, path=str(path)))
    except (data.DatasetUnavailableError, data.ChecksumError) as err:
        _emit(dict(available=False, reason=str(err).split(". ")[0]))


SMOKE = '''\
```{code-cell} ipython3
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
from IPython.display import HTML
from pfcourse import data, eos, models, plots, spectral
from pfcourse.widgets import eos_player
```

```{code-cell} ipython3
ds = data.load_digits(n_train=200)
params0 = models.init_mlp(jax.random.key(0), [ds.input_dim, 16, 16, ds.num_classes], "tanh", dtype=jnp.float32)
apply = models.mlp_apply("tanh")
E = models.full_batch_loss(apply, ds.x_train, ds.y_train, "square")
print(float(jax.jit(lambda p: spectral.sharpness(E, p, "lanczos", num_iter=10))(params0)))
# the player's setting below: compiled once for both (same shapes, labels, eig_every, k, num_iter)
history = eos.gd_edge_of_stability(apply, params0, ds.x_train, ds.y_train, [0.5], labels=ds.labels_train,
                                   steps=60, eig_every=10, k=2, num_iter=20, progress=False)
print("\\n".join(eos.fit_check(history, tolerance=0.10)))
```

```{code-cell} ipython3
fig, axes = plots.figure(2, width=4.6, height=3.3)
plots.eos_sharpness(axes[0], history)
plots.eos_loss(axes[1], history)
```

```{code-cell} ipython3
player = eos_player(setting=dict(n_train=200, hidden=[16, 16], steps=40, eig_every=10))
player
```

```{code-cell} ipython3
run = player.state["history"]
HTML(plots.eos_animation(run, frames=4, interval=150, dpi=40).to_jshtml())
```
'''

REPORT = '''\
import json as _gc_json, re as _gc_re, jax as _gc_jax
_gc = {"backend": _gc_jax.default_backend()}
if "player" in globals() and player.state.get("history") is not None:
    _gc_row = player.state["history"].summary()[0]
    _gc.update(header=_gc_re.sub("<[^>]+>", "", player.children[0].value), h=_gc_row["h"],
               steps=_gc_row["steps"], settled_ratio=_gc_row["settled_ratio"], status=_gc_row["status"])
print("%s" + _gc_json.dumps(_gc))
''' % MARK


def child_chapter(opts: dict) -> None:
    import jupytext
    import nbclient
    import nbformat

    if opts["chapter"]:
        nb = jupytext.read(opts["chapter"])
        where = str(Path(opts["chapter"]).parent)
    else:
        nb = jupytext.reads(SMOKE, fmt="md:myst")
        where = str(ROOT / "book")
    nb.cells.append(nbformat.v4.new_code_cell(REPORT))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    t0 = time.perf_counter()
    nbclient.NotebookClient(nb, timeout=int(opts["cell_timeout"]), kernel_name="python3",
                            resources={"metadata": {"path": where}}).execute()
    seconds = time.perf_counter() - t0
    text = "".join(o.get("text", "") for o in nb.cells[-1].get("outputs", []) if o.get("output_type") == "stream")
    line = next((l for l in text.splitlines() if l.startswith(MARK)), None)
    if line is None:
        raise RuntimeError(f"the report cell printed nothing usable: {text!r}")
    _emit({**json.loads(line[len(MARK):]), "seconds": seconds, "cells": len(nb.cells) - 1})


def child_player(opts: dict) -> None:
    import importlib

    import jax

    P = importlib.import_module("pfcourse.widgets.eos_player")  # the package re-exports the function

    setting = {**P.default_setting("gpu"), **opts["overrides"]}
    t0 = time.perf_counter()
    hist, text = P.train_for_player(setting)
    seconds = time.perf_counter() - t0
    row = hist.summary()[0]
    _emit(dict(backend=jax.default_backend(), text=text, seconds=seconds, steps=row["steps"], h=row["h"],
               status=row["status"], settled_ratio=row["settled_ratio"], max_sharpness=row["max_sharpness"],
               final_loss=row["final_loss"], gd_s=hist.config["time_gd_s"], eig_s=hist.config["time_eig_s"],
               solves=hist.config["eigen_solves"], setting=setting))


CHILDREN = {"backend": child_backend, "data": child_data, "chapter": child_chapter, "player": child_player}


# --------------------------------------------------------------------------- the parent


class Runner:
    def __init__(self, budget: float, log_dir: Path, env: dict):
        self.deadline = time.monotonic() + budget
        self.start = time.monotonic()
        self.budget = budget
        self.log_dir = log_dir
        self.env = env
        self.rows: list[dict] = []

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, name: str, cmd: list[str], cap: float, env: dict | None = None) -> tuple[int | None, str, float]:
        """Run ``cmd`` with its output to ``<log_dir>/<name>.log``; return (exit code or None on time-out, output, s)."""
        limit = min(cap, self.left())
        log = self.log_dir / f"{name}.log"
        if limit < 5:
            log.write_text("skipped: the time budget is spent\n")
            return None, "", 0.0
        t0 = time.monotonic()
        with open(log, "w") as out:
            out.write("$ " + " ".join(cmd) + "\n")
            out.flush()
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env or self.env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                rc = proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                rc = None
                os.killpg(proc.pid, signal.SIGINT)  # lets nbclient shut its kernel down
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        seconds = time.monotonic() - t0
        text = log.read_text(errors="replace")
        if rc is None:
            with open(log, "a") as out:
                out.write(f"\n[gpu_check] stopped after {seconds:.0f} s (limit {limit:.0f} s)\n")
        return rc, text, seconds

    def child(self, name: str, step: str, opts: dict, cap: float, env: dict | None = None):
        """Run one child function; return (result dict or None, seconds, error text)."""
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", step, json.dumps(opts)]
        rc, text, seconds = self.run(name, cmd, cap, env)
        lines = [l for l in text.splitlines() if l.startswith(MARK)]
        if rc == 0 and lines:
            return json.loads(lines[-1][len(MARK):]), seconds, ""
        return None, seconds, self.why(rc, text, seconds)

    def why(self, rc, text: str, seconds: float) -> str:
        if rc is None and seconds == 0.0:
            return "skipped: the time budget is spent"
        if rc is None:
            return f"timed out after {seconds:.0f} s"
        tail = [l for l in text.splitlines() if l.strip()][-1:] or ["no output"]
        return f"exit {rc}: {tail[0][:160]}"

    def add(self, step: str, status: str, seconds: float, result: str, log: str | None = None) -> None:
        self.rows.append(dict(step=step, status=status, seconds=seconds, result=result, log=log))
        print(f"[gpu] {step}: {status} ({seconds:.1f} s) {result}", flush=True)

    def table(self) -> bool:
        total = time.monotonic() - self.start
        ok = all(r["status"] in ("ok", "fallback", "skipped") for r in self.rows)  # "skipped": by choice
        w = max(len(r["step"]) for r in self.rows)
        print()
        print(f"{'step':{w}}  {'status':8}  {'seconds':>8}  result")
        print(f"{'-' * w}  {'-' * 8}  {'-' * 8}  {'-' * 6}")
        for r in self.rows:
            print(f"{r['step']:{w}}  {r['status']:8}  {r['seconds']:8.1f}  {r['result']}")
        print(f"{'total':{w}}  {'ok' if ok else 'FAILED':8}  {total:8.1f}  budget {self.budget:.0f} s; "
              f"logs in {self.log_dir}")
        for r in self.rows:
            if r["status"] == "FAILED" and r["log"] and Path(r["log"]).exists():
                tail = Path(r["log"]).read_text(errors="replace").splitlines()[-12:]
                print(f"\n--- {r['step']}: last lines of {r['log']}\n" + "\n".join(tail))
        return ok


def pinned(name: str) -> str:
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        m = re.match(rf"^{re.escape(name)}==(\S+)", line.strip())
        if m:
            return m.group(1)
    raise SystemExit(f"gpu_check: requirements.txt pins no {name}")


def driver_cuda() -> tuple[int, int] | None:
    """The newest CUDA the NVIDIA driver supports, from ``nvidia-smi`` (None without one)."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def install_command(cuda: tuple[int, int] | None, choice: str | None = None) -> tuple[str, list[str]]:
    """The jax CUDA extra for the driver's CUDA (``choice`` wins) and the pip command that installs it,
    jax and jaxlib held at their pins in requirements.txt (which is also passed as constraints)."""
    extra = f"cuda{choice or ('13' if cuda and cuda[0] >= 13 else '12')}"
    return extra, [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-c",
                   str(ROOT / "requirements.txt"), f"jax[{extra}]=={pinned('jax')}", f"jaxlib=={pinned('jaxlib')}"]


def fmt(x, spec=".3f") -> str:
    try:
        return format(float(x), spec)
    except (TypeError, ValueError):
        return str(x)


def data_label(text: str) -> str:
    if "synthetic" in text:
        return "synthetic CIFAR-shaped data"
    if "CIFAR-10 unavailable" in text:
        return "digits (CIFAR-10 unavailable)"
    if "CIFAR-10" in text:
        return "CIFAR-10"
    if "digits" in text:
        return "digits"
    return "?"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="on the CPU, tiny sizes, no install, no download")
    p.add_argument("--cuda", choices=("12", "13"), default=None,
                   help="the jax CUDA extra (default: 13 if the driver supports CUDA 13, else 12)")
    p.add_argument("--no-install", action="store_true", help="use the jax installed in this venv as it is")
    p.add_argument("--no-reference", action="store_true", help="the benchmark without its PyTorch reference")
    p.add_argument("--full-chapter", action="store_true", help="dry run: execute chapter 6 itself (about a minute)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds for everything, the steps' limits scaled with it (default 480; dry run 240)")
    p.add_argument("--log-dir", default=str(ROOT / "_build" / "gpu_check"))
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        CHILDREN[args.child[0]](json.loads(args.child[1]))
        return 0

    dry = args.dry_run
    mode = "dry" if dry else "gpu"
    budget = args.budget or BUDGET[mode]
    caps = {k: v * budget / BUDGET[mode] for k, v in CAPS[mode].items()}
    log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)  # the kernel uses the inline backend
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if dry:
        env["JAX_PLATFORMS"] = "cpu"
    want = "cpu" if dry else "gpu"
    R = Runner(budget, log_dir, env)
    log = lambda name: str(log_dir / f"{name}.log")  # noqa: E731
    print(f"[gpu] {'dry run on the CPU, tiny sizes' if dry else 'GPU check'}; budget {R.budget:.0f} s; "
          f"logs in {log_dir}", flush=True)

    # 1-2. the CUDA jax, and a GPU that JAX sees
    pin = pinned("jax")
    if dry:
        R.add("install CUDA jax", "skipped", 0.0, "dry run: nothing installed")
    else:
        probe, s, _ = R.child("probe", "backend", {}, caps["backend"])
        if args.no_install:
            R.add("install CUDA jax", "skipped", s, "--no-install: the venv's jax as it is")
        elif probe and probe["backend"] == "gpu" and probe["jax"] == pin:
            R.add("install CUDA jax", "ok", s, f"already installed: jax {pin}, {', '.join(probe['plugins'])}")
        else:
            cuda = driver_cuda()
            extra, cmd = install_command(cuda, args.cuda)
            print(f"[gpu] driver CUDA {'.'.join(map(str, cuda)) if cuda else 'unknown (no nvidia-smi)'}: "
                  f"{' '.join(cmd[3:])}", flush=True)
            rc, text, s2 = R.run("install", cmd, caps["install"])
            R.add("install CUDA jax", "ok" if rc == 0 else "FAILED", s + s2,
                  f"jax[{extra}]=={pin} (driver CUDA {'.'.join(map(str, cuda)) if cuda else 'unknown'})"
                  if rc == 0 else R.why(rc, text, s2), log("install"))
    info, s, err = R.child("backend", "backend", {}, caps["backend"])
    if info and info["backend"] == want:
        R.add("JAX backend", "ok", s, f"{info['backend']}: {', '.join(info['devices'][:1])} x{len(info['devices'])}; "
              f"jax {info['jax']}, jaxlib {info['jaxlib']}" + (f", {', '.join(info['plugins'])}" if info["plugins"] else ""),
              log("backend"))
    else:
        got = f"JAX's default backend is {info['backend']!r}, not {want!r}" if info else err
        hint = "" if dry else ("; check nvidia-smi and the driver (CUDA 13 wheels need driver >= 580: try --cuda 12), "
                               f"and the warnings in {log('backend')}")
        R.add("JAX backend", "FAILED", s, got + hint, log("backend"))
        for step in ("CIFAR-10", "chapter 6", "EoS player (GPU setting)", "EoS benchmark"):
            R.add(step, "not run", 0.0, f"no {want} backend")
        R.table()
        return 1

    # 3. CIFAR-10, or synthetic CIFAR-shaped data
    got, s, err = R.child("data", "data", dict(dry=dry, timeout=30.0), caps["data"])
    have_cifar = bool(got and got["available"])
    if have_cifar:
        R.add("CIFAR-10", "ok", s, f"cached at {got['path']} (SHA-256 verified)", log("data"))
    else:
        reason = got["reason"] if got else err
        R.add("CIFAR-10", "fallback", s, f"unavailable ({reason}): the player step uses SYNTHETIC CIFAR-shaped data",
              log("data"))
        print("[gpu] CIFAR-10 cannot be downloaded: the EoS player step trains on synthetic CIFAR-shaped data "
              "(standard normal inputs, labels of a random linear teacher)", flush=True)
    kernel_env = dict(env)
    if not have_cifar and not dry:
        # the chapter's player would try the download again and may wait out a socket time-out; a proxy
        # that refuses at once makes it fall back to digits (as the book does offline) without waiting
        kernel_env.update(https_proxy="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9")

    # 4. chapter 6 (dry run: a smoke notebook of its package calls, unless --full-chapter)
    chapter = str(CHAPTER) if (not dry or args.full_chapter) else None
    label = "chapter 6" if chapter else "chapter 6 smoke notebook"
    got, s, err = R.child("chapter", "chapter", dict(chapter=chapter, cell_timeout=max(caps["chapter"], 60)),
                          caps["chapter"], kernel_env)
    if got and got["backend"] == want:
        player = (f"; player: {data_label(got.get('header', ''))}, h = {fmt(got.get('h'), '.4g')}, "
                  f"{got.get('steps')} steps, settled h*lambda_0/2 = {fmt(got.get('settled_ratio'))}"
                  if "header" in got else "")
        R.add(label, "ok", s, f"{got['cells']} cells on {got['backend']} in {got['seconds']:.1f} s{player}",
              log("chapter"))
    else:
        R.add(label, "FAILED", s, f"ran on {got['backend']}, not {want}" if got else err, log("chapter"))

    # 5. the EoS player's GPU setting
    overrides = dict(dataset="cifar10" if have_cifar else "synthetic-cifar", **(DRY_PLAYER if dry else {}))
    got, s, err = R.child("player", "player", dict(overrides=overrides), caps["player"])
    if got and got["backend"] == want and not str(got["status"]).startswith("diverged"):
        st = got["setting"]
        R.add("EoS player (GPU setting)", "ok", s,
              f"{data_label(got['text'])}, n = {st['n_train']}, {got['steps']} steps in {got['seconds']:.1f} s "
              f"(GD {got['gd_s']:.1f} s, {got['steps'] / max(got['gd_s'], 1e-9):.0f} steps/s; {got['solves']} solves "
              f"{got['eig_s']:.1f} s); h = {fmt(got['h'], '.4g')}, settled h*lambda_0/2 = {fmt(got['settled_ratio'])}",
              log("player"))
    else:
        why = err if not got else (f"ran on {got['backend']}" if got["backend"] != want else got["status"])
        R.add("EoS player (GPU setting)", "FAILED", s, why, log("player"))

    # 6. the EoS benchmark's GPU configuration
    config = "tiny" if dry else "gpu-full"
    reference = (not dry and not args.no_reference and info.get("torch") and info["torch"]["cuda"])
    out_json = log_dir / "eos_benchmark.json"
    if out_json.exists():
        out_json.unlink()
    cmd = [sys.executable, str(BENCHMARK), "--config", config, "--part", "training", "--rounds", "1",
           "--json", str(out_json)]
    if not reference:
        cmd.append("--skip-reference")
    rc, text, s = R.run("benchmark", cmd, caps["benchmark"])
    if rc == 0 and out_json.exists():
        res = json.loads(out_json.read_text())["training"]
        rounds, fl, steps = res["rounds"], res["flops"], res["cfg"]["steps"]
        pf = rounds["pfcourse, empty cache"][-1]
        floor = (steps + 1) * (fl["gradient"] / res["peak_spec"] if res.get("peak_spec") else res["floor_per_gradient_s"])
        line = (f"{config} ({res['backend']}, {res['device']}): {steps} steps + {pf['solves']} solves, whole "
                f"process {pf['whole']:.2f} s, warm {pf['warm']:.2f} s, {steps / pf['gd']:.0f} GD steps/s, GD at "
                f"{pf['gd'] / floor:.1f}x its FLOP floor ({'data-sheet peak' if res.get('peak_spec') else 'measured matmuls'})")
        if rounds.get("reference"):
            ref = rounds["reference"][-1]
            line += (f"; PyTorch reference whole process {ref['whole']:.2f} s ({ref['whole'] / pf['whole']:.1f}x), "
                     f"warm {ref['warm'] / pf['warm']:.1f}x")
        else:
            line += "; no PyTorch reference" + (" (dry run)" if dry else " (torch with CUDA not installed)")
        ok = res["backend"] == want
        R.add(f"EoS benchmark {config}", "ok" if ok else "FAILED", s, line if ok else f"ran on {res['backend']}",
              log("benchmark"))
    else:
        R.add(f"EoS benchmark {config}", "FAILED", s, R.why(rc, text, s), log("benchmark"))

    return 0 if R.table() else 1


if __name__ == "__main__":
    sys.exit(main())
