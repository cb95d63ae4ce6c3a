"""`python3 dev.py gpu`: the GPU path's dry run on the CPU (tiny sizes, no install, no download)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
sys.path.insert(0, str(SCRIPT.parent))
import gpu_check  # noqa: E402

from pfcourse import data  # noqa: E402

STEPS = ["install CUDA jax", "JAX backend", "CIFAR-10", "chapter 6 smoke notebook", "EoS player (GPU setting)",
         "EoS benchmark tiny"]


def _run(tmp_path, *args, timeout=300):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--log-dir", str(tmp_path), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def _table(out):
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("step ") and "seconds" in line)
    rows = {}
    for line in lines[start + 2:]:
        if line.startswith("total"):
            return rows, line
        for step in STEPS:
            if line.startswith(step + " "):
                rows[step] = line[len(step):].split()
    raise AssertionError("no total line:\n" + out)


def test_dry_run_prints_one_table_and_passes(tmp_path):
    code, out = _run(tmp_path, "--budget", "400", timeout=480)  # generous: the machine may be shared
    assert code == 0, out
    rows, total = _table(out)
    assert set(rows) == set(STEPS), out
    assert rows["install CUDA jax"][0] == "skipped"
    assert rows["JAX backend"][0] == "ok" and "cpu:" in " ".join(rows["JAX backend"])
    assert rows["CIFAR-10"][0] in ("ok", "fallback")
    for step in STEPS[3:]:
        assert rows[step][0] == "ok", out
        assert float(rows[step][1]) > 0
    assert "settled h*lambda_0/2" in " ".join(rows["EoS player (GPU setting)"])
    assert "GD steps/s" in " ".join(rows["EoS benchmark tiny"])
    if rows["CIFAR-10"][0] == "fallback":        # said on screen, and the player really trained on it
        assert "SYNTHETIC CIFAR-shaped data" in out
        assert "synthetic CIFAR-shaped data" in " ".join(rows["EoS player (GPU setting)"])
    assert total.split()[1] == "ok"
    assert (tmp_path / "eos_benchmark.json").exists() and (tmp_path / "player.log").exists()


def test_a_failed_step_fails_the_run(tmp_path):
    """Out of time: the steps are skipped or stopped, the table still prints, the exit code is 1."""
    code, out = _run(tmp_path, "--budget", "4", timeout=120)
    assert code == 1, out
    rows, total = _table(out)
    assert total.split()[1] == "FAILED"
    assert any(r[0] == "FAILED" for r in rows.values())


@pytest.mark.parametrize("cuda, choice, extra", [((13, 0), None, "cuda13"), ((12, 8), None, "cuda12"),
                                                 (None, None, "cuda12"), ((13, 1), "12", "cuda12")])
def test_install_keeps_jax_pinned(cuda, choice, extra):
    pins = dict(line.split("==") for line in (ROOT / "requirements.txt").read_text().splitlines()
                if line.startswith(("jax==", "jaxlib==")))
    got, cmd = gpu_check.install_command(cuda, choice)
    assert got == extra
    assert f"jax[{extra}]=={pins['jax']}" in cmd and f"jaxlib=={pins['jaxlib']}" in cmd
    assert cmd[cmd.index("-c") + 1].endswith("requirements.txt")


def test_synthetic_cifar_is_cifar_shaped_and_seeded():
    a = data.load_dataset("synthetic-cifar", n_train=50, n_test=10)
    b = data.load_synthetic_cifar(50, 10, seed=0)
    assert a.x_train.shape == (50, 3072) and a.y_train.shape == (50, 10) and a.x_test.shape == (10, 3072)
    assert a.name == "synthetic-cifar" and "not CIFAR-10" in a.note
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.labels_train, data.load_synthetic_cifar(50, 10, seed=1).labels_train)
    with pytest.raises(ValueError, match="class subsets"):
        data.load_dataset("synthetic-cifar", n_train=5, classes=[0, 1])
