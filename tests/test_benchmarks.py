"""The benchmarks run, and a restored compilation cache hits.

Every script in ``benchmarks/`` runs here at its smallest size, as a user starts it (a subprocess, in
the repository), so a script that no longer runs against the package fails the suite; what it prints
is not checked for speed (speed is the benchmarks' business, never a test's), only that it got to its
table. A script whose reference implementation is not installed here (PyTorch, the authors' code) is
skipped with the reason, and the pfcourse side still runs. The GPU check has its own test.

The compilation-cache test fills a cache in one folder, copies it to another, and counts the
compilations a fresh process makes with the copy: zero (``pfcourse/_cache.py`` explains why the
folder's path used to enter JAX's cache key).
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"

#: How each script runs at its smallest size, and a line its output must contain (its table got printed).
SMOKE = {
    "central_flow_benchmark.py": (["--smoke"], "where the time goes"),
    "pf_integration.py": (["--smoke"], "flows.quadratic_pf_solution (exact)"),
    "symbolic_benchmark.py": (["--max-order", "3"], "principal_coefficients(3)"),
    "eos_benchmark.py": (["--config", "tiny", "--part", "sharpness"], "Lanczos, 10 iterations"),
    "eos_benchmark.py --part cli": (["--config", "tiny", "--part", "cli", "--rounds", "1"], "filled cache"),
    "grading_benchmark.py": (["--quick"], ""),
}
#: Scripts run by another test, or needing what cannot be installed at test time.
ELSEWHERE = {
    "gpu_check.py": "tests/test_gpu_check.py runs its --dry-run, which runs eos_benchmark.py --config tiny "
                    "--part training",
    "torch_reference.py": "test_the_torch_reference_runs_or_says_why (below)",
    "real_code_check.py": "needs the authors' code (git clone locuslab/edge-of-stability) and torch: "
                          "a one-off check, see benchmarks/README.md",
}
NO_CACHE_ENV = ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
                "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "JAX_PERSISTENT_CACHE_ENABLE_XLA_CACHES")


def _run(args, timeout=1500, env=None):
    """``python args...`` in the repository; (exit code, stdout and stderr)."""
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)
    return proc.returncode, proc.stdout + proc.stderr


def _has_torch() -> bool:
    return importlib.util.find_spec("torch") is not None and importlib.util.find_spec("scipy") is not None


def test_every_benchmark_script_is_run_somewhere():
    """A new script in benchmarks/ needs a smoke run here (or a named test elsewhere)."""
    scripts = {p.name for p in BENCH.glob("*.py")}
    covered = {name.split()[0] for name in SMOKE} | set(ELSEWHERE)
    assert scripts <= covered, f"benchmarks without a smoke run in tests/test_benchmarks.py: {scripts - covered}"


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SMOKE))
def test_runs_at_its_smallest_size(name):
    script = BENCH / name.split()[0]
    if not script.exists():
        pytest.skip(f"{script.name} is not in benchmarks/ (yet)")
    args, expect = SMOKE[name]
    code, out = _run([script, *args])
    assert code == 0, out[-4000:]
    assert expect in out, out[-4000:]


@pytest.mark.slow
def test_the_torch_reference_runs_or_says_why(capsys):
    """With torch, the EoS benchmark's smallest training run includes the reference; without it, the
    smallest run says why it skips the reference and a real-size run refuses (no silent skip)."""
    if _has_torch():
        code, out = _run([BENCH / "eos_benchmark.py", "--config", "tiny", "--part", "training", "--rounds", "1",
                          "--child-runs", "1"])
        assert code == 0 and "round 1: reference" in out, out[-4000:]
        return
    sys.path.insert(0, str(BENCH))
    import eos_benchmark

    args = type("Args", (), dict(skip_reference=False, reference_python=sys.executable, config_name="tiny"))()
    eos_benchmark.check_reference(args)
    assert args.skip_reference and "reference skipped (smoke size)" in capsys.readouterr().out
    args.skip_reference, args.config_name = False, "cpu-small"
    with pytest.raises(SystemExit, match="--skip-reference"):
        eos_benchmark.check_reference(args)
    pytest.skip("torch is not installed here (pip install -r benchmarks/requirements.txt scipy): the PyTorch "
                "reference itself did not run; the skip message and the refusal at real size were checked")


# --------------------------------------------------------------------------- a copied compilation cache

PROGRAM = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp
    from jax import monitoring

    counts = {"/jax/compilation_cache/compile_requests_use_cache": 0, "/jax/compilation_cache/cache_hits": 0}

    def count(name, **kwargs):
        if name in counts:
            counts[name] += 1

    monitoring.register_event_listener(count)
    if sys.argv[1] != "env":
        from pfcourse._cache import enable_compilation_cache
        enable_compilation_cache(sys.argv[1])
    f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum())
    f(jnp.ones((8, 8))).block_until_ready()
    print(json.dumps({"lookups": counts["/jax/compilation_cache/compile_requests_use_cache"],
                      "hits": counts["/jax/compilation_cache/cache_hits"]}))
""")


def _dev_cache_env(folder, monkeypatch) -> dict:
    """The variables `dev.py` gives its child processes for a cache in ``folder``."""
    sys.path.insert(0, str(ROOT))
    import dev

    monkeypatch.setenv("PFCOURSE_JAX_CACHE", str(folder))
    cache_env = dev._compilation_cache_env({})
    # dev.py writes only programs that took 0.1 s to compile; this tiny one takes less
    return dict(cache_env, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")


def _compile(how, folder, monkeypatch):
    """Run PROGRAM with a cache in ``folder``: (lookups, hits) of JAX's persistent cache."""
    env = {k: v for k, v in os.environ.items() if k not in NO_CACHE_ENV}
    if how == "env":
        env.update(_dev_cache_env(folder, monkeypatch))
    code, out = _run(["-c", PROGRAM, "env" if how == "env" else folder], timeout=300, env=env)
    assert code == 0, out
    counts = json.loads(out.strip().splitlines()[-1])
    return counts["lookups"], counts["hits"]


@pytest.mark.parametrize("how", ["enable_compilation_cache", "env"])
def test_a_copied_cache_hits(tmp_path, monkeypatch, how):
    """Filled in A, copied to B: a new process with B compiles nothing (every lookup is a hit).

    Counted by JAX's own monitoring events: each program JAX looks up in the persistent cache records
    ``compile_requests_use_cache``, each one loaded from it ``cache_hits``; a lookup without a hit is a
    compilation. ``how``: ``pfcourse._cache.enable_compilation_cache`` (the CLI, the book) or the
    environment variables of ``dev.py`` (chapters and tests run by it)."""
    a, b = tmp_path / "A", tmp_path / "B"
    lookups, hits = _compile(how, a, monkeypatch)
    assert lookups >= 1 and hits == 0              # a fresh folder: everything compiled and written
    written = sorted(p.name for p in a.iterdir())
    assert written
    shutil.copytree(a, b)
    lookups, hits = _compile(how, b, monkeypatch)
    assert lookups >= 1 and hits == lookups, f"{lookups - hits} of {lookups} programs compiled again"
    assert sorted(p.name for p in b.iterdir()) == written      # nothing new written either
