"""Check ``torch_reference.py`` once against the authors' own code (locuslab/edge-of-stability).

Runs the authors' ``gd.main`` (``src/gd.py``, unchanged) on the CPU, and ``torch_reference.train``
on the same data from the same start, alternating in one process (the order flips every round), and prints: per-step train losses and the
eigenvalues of both (they must agree to float32 rounding), Hessian-vector products per solve,
and the time of each. What is patched to run the authors' code here, and nothing else:

- ``.cuda()`` on tensors and modules returns the object itself, and ``torch.zeros(..., device='cuda')``
  allocates on the CPU (the code hard-codes CUDA);
- ``gd.load_dataset`` returns the benchmark's synthetic CIFAR-shaped data (``cifar.py`` imports
  torchvision, which is stubbed out) and ``gd.load_architecture`` returns their own ``fc-tanh``
  network (``archs.load_architecture``) with the benchmark's initial parameters loaded;
- ``utilities.compute_hvp`` is wrapped to count its calls; results go to a temporary ``$RESULTS``.

Usage (torch, scipy and numpy in the interpreter; the data file from ``eos_benchmark.py --prepare``)::

    git clone https://github.com/locuslab/edge-of-stability /tmp/eos-real
    python benchmarks/real_code_check.py --real-src /tmp/eos-real/src --data /tmp/workload.npz
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
import types

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_reference as ref  # noqa: E402


def patch_cuda() -> None:
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    zeros = torch.zeros

    def cpu_zeros(*a, **k):
        if str(k.get("device", "")).startswith("cuda"):
            k["device"] = "cpu"
        return zeros(*a, **k)

    torch.zeros = cpu_zeros


def load_real(src: str, train_set, test_set, layers):
    sys.modules["cifar"] = types.SimpleNamespace(load_cifar=None)  # imports torchvision; not used
    sys.path.insert(0, src)
    import archs
    import gd
    import utilities

    calls = [0]
    hvp = utilities.compute_hvp

    def counted(*a, **k):
        calls[0] += 1
        return hvp(*a, **k)

    utilities.compute_hvp = counted

    def architecture(arch_id, dataset):
        net = archs.load_architecture(arch_id, dataset)
        ref.load_params(net, layers)
        return net

    gd.load_dataset = lambda name, loss: (train_set, test_set)
    gd.load_architecture = architecture
    return gd, calls


def run_real(gd, calls, args, results: str) -> dict:
    os.environ["RESULTS"] = results
    calls[0] = 0
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        gd.main(dataset="cifar10-1k", arch_id="fc-tanh", loss="mse", opt="gd", lr=args.lr, max_steps=args.max_steps,
                neigs=args.k, eig_freq=args.eig_every, physical_batch_size=1000)
    t = time.perf_counter() - t0
    folder = f"{results}/cifar10-1k/fc-tanh/seed_0/mse/gd/lr_{args.lr}"
    return dict(time=t, loss=torch.load(f"{folder}/train_loss_final").numpy(),
                eig=torch.load(f"{folder}/eigs_final").numpy(), hvps=calls[0])


def run_reference(net_sizes, layers, train_set, test_set, args) -> dict:
    net = ref.fc_net(net_sizes)
    ref.load_params(net, layers)
    t0 = time.perf_counter()
    out = ref.train(net, train_set, args.lr, args.max_steps, args.k, args.eig_every, test_set)
    return dict(time=time.perf_counter() - t0, loss=out["loss"], eig=out["eigenvalues"], hvps=int(out["hvps"].sum()))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--real-src", required=True, help="the src/ folder of a checkout of locuslab/edge-of-stability")
    p.add_argument("--data", required=True)
    p.add_argument("--max-steps", type=int, default=100, help="gd.py's max_steps (the loop runs this many times)")
    p.add_argument("--eig-every", type=int, default=50)
    p.add_argument("--k", type=int, default=2)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--test", type=int, default=0, help="test examples evaluated every step (0: none)")
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args(argv)
    z = np.load(args.data)
    layers = [(z[f"w{i}"], z[f"b{i}"]) for i in range(sum(name.startswith("w") for name in z.files))]
    sizes = [layers[0][0].shape[0]] + [w.shape[1] for w, _ in layers]
    train_set = TensorDataset(torch.as_tensor(z["x"]), torch.as_tensor(z["y"]))
    test_set = TensorDataset(torch.as_tensor(z["x_test"][: args.test]), torch.as_tensor(z["y_test"][: args.test]))
    patch_cuda()
    gd, calls = load_real(args.real_src, train_set, test_set, layers)
    times = {"authors' gd.py": [], "torch_reference.py": []}
    with tempfile.TemporaryDirectory() as results:
        for r in range(args.rounds):  # alternating, the order flipped every round
            if r % 2:
                mine = run_reference(sizes, layers, train_set, test_set if args.test else None, args)
            real = run_real(gd, calls, args, results)
            if r % 2 == 0:
                mine = run_reference(sizes, layers, train_set, test_set if args.test else None, args)
            times["authors' gd.py"].append(real["time"])
            times["torch_reference.py"].append(mine["time"])
    print(f"load average {open('/proc/loadavg').read().split()[:3]}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; n = {len(train_set)}, test = {args.test}, max_steps = {args.max_steps}, "
          f"eig_freq = {args.eig_every}, neigs = {args.k}")
    for name, t in times.items():
        print(f"{name:22} time [s] per round: {', '.join(f'{v:.2f}' for v in t)}")
    rel = np.max(np.abs(real["loss"] - mine["loss"]) / np.abs(real["loss"]))
    print(f"HVPs: authors {real['hvps']}, reference {mine['hvps']}; solves {len(real['eig'])} / {len(mine['eig'])}")
    print(f"eigenvalues: authors {np.round(real['eig'], 5).tolist()}, reference {np.round(mine['eig'], 5).tolist()}")
    print(f"max relative difference of the per-step train loss: {rel:.1e}; of the eigenvalues: "
          f"{np.max(np.abs(real['eig'] - mine['eig']) / np.abs(real['eig'])):.1e}")
    ratio = np.median(times["torch_reference.py"]) / np.median(times["authors' gd.py"])
    print(f"time of the reference over the authors' code (median of rounds): {ratio:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
