"""The lowest versions pyproject.toml declares, tested (the Colab leg).

In Colab pfcourse installs on top of Colab's own jax, numpy, matplotlib and ipywidgets, held at their
installed versions, so what the package promises is its lower bounds, not requirements.txt's pins.
This leg reads the bounds from pyproject.toml and installs exactly them (``name==bound``, jaxlib at
jax's bound; their own dependencies resolved by pip) into ``.venv-lowest/`` (gitignored), with pytest
and hypothesis at requirements.txt's pins; pfcourse is the checkout itself (on ``PYTHONPATH``). The
environment is reused while the bounds are unchanged (a hash of them, stamped in the venv), and made
again from scratch when they change. In it run:

* :data:`TESTS`, a fast subset of the unit tests: the landscape explorer (ipywidgets 7, Colab's) and
  the tests of what changed between the bounds and the pins (diffrax, equinox's runtime errors,
  optax, jax.random.key, scikit-learn's digits, sympy, Lanczos);
* ``tests/lowest_versions_smoke.py``: the calls the chapters make into the package, at toy sizes,
  including the EoS player (slider and Train button) and the check that jax draws the book's numbers.

The whole suite passed at these bounds when they were set (pyproject.toml says why each is not
lower). A failed install fails (never skips). Deselect the leg with ``-m "not lowest"``.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import re
import subprocess
import sys
import time
import tomllib
import venv
from pathlib import Path

import pytest
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv-lowest"
PY = VENV / "bin" / "python"
STAMP = VENV / ".pfcourse-lowest.sha256"
LOCK = ROOT / ".venv-lowest.lock"       # two test runs in one checkout build it once
SMOKE = ROOT / "tests" / "lowest_versions_smoke.py"

pytestmark = pytest.mark.lowest

#: The unit tests run at the lowest versions: a fast subset (about half a minute on two idle cores)
#: of what differs between the bounds and the pins. A test renamed here fails the leg ("not found").
TESTS = [
    # the landscape explorer and the animations, ipywidgets 7 (one scene: the others draw with the same calls)
    "tests/test_widgets.py::test_compute_state_and_draw_every_scene[saddle]",
    "tests/test_widgets.py::test_pf_on_the_quadratic_scene_is_the_closed_form",
    "tests/test_widgets.py::test_models_toggle_and_bad_input",
    "tests/test_widgets.py::test_divergence_is_shown_not_raised",
    "tests/test_widgets.py::test_regime_at_a_chosen_iterate",
    "tests/test_widgets.py::test_explorer_widget_callbacks",
    "tests/test_widgets.py::test_descent_animation_and_html",
    "tests/test_widgets.py::test_regime_map_draws_the_four_factors",
    "tests/test_flows.py::test_quadratic_pf_solution_passes_through_gd_iterates",   # diffrax, complex states
    "tests/test_flows.py::test_h_lambda_equal_one_field_raises_instead_of_nan",     # equinox.error_if, jit
    "tests/test_flows.py::test_non_finite_parameters",                              # eqx.EquinoxRuntimeError
    "tests/test_dal.py::test_traced_bad_p_raises_at_run_time_under_jit_and_vmap",   # error_if under vmap
    "tests/test_dal.py::test_non_finite_hvp_or_gradient_raises_never_nan",
    "tests/test_dal.py::test_zero_gradient_gives_h_max_and_a_zero_step_without_nan",  # optax.safe_increment
    "tests/test_dal.py::test_state_starts_at_the_fixed_rate_and_logs_the_ratio",    # optax.tree_utils
    "tests/test_dal.py::test_scale_by_dal_chains_like_dal_and_hvp_fn_matches_loss_fn",  # optax.chain
    "tests/test_central_flow.py::test_zero_grad_S_on_the_edge_is_refused",
    "tests/test_models.py::test_init_shapes_and_pytorch_bounds",                    # jax.random.key
    "tests/test_data.py::test_digits_shapes_onehot_and_standardisation",            # scikit-learn
    "tests/test_data.py::test_digits_default_test_split_is_the_rest_and_classes_relabel",
    "tests/test_symbolic.py::test_principal_coefficients",                          # sympy
    "tests/test_symbolic.py::test_igr_identity_symbolic",
    "tests/test_spectral.py::test_lanczos_full_krylov_is_exact_eigendecomposition",
    "tests/test_spectral.py::test_lanczos_exact_breakdown_from_an_eigenvector",
]


def lower_bounds() -> dict[str, str]:
    """``{name: version}`` from pyproject.toml's dependencies, each of which must be ``name>=version``."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    bounds = {}
    for requirement in deps:
        match = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*>=\s*([0-9][0-9A-Za-z.]*)\s*", requirement)
        assert match, f"pyproject.toml: {requirement!r} is not `name>=version` (a lower bound, and only that)"
        bounds[match[1]] = match[2]
    return bounds


def pinned(name: str) -> str:
    """The version requirements.txt pins ``name`` at."""
    match = re.search(rf"^{re.escape(name)}==(\S+)", (ROOT / "requirements.txt").read_text(), re.M | re.I)
    assert match, f"requirements.txt does not pin {name}"
    return match[1]


def lowest_requirements() -> list[str]:
    """What .venv-lowest installs: every bound exactly, jaxlib at jax's, pytest and hypothesis pinned."""
    bounds = lower_bounds()
    requirements = [f"{name}=={version}" for name, version in bounds.items()]
    if "jax" in bounds:
        requirements.append(f"jaxlib=={bounds['jax']}")
    return requirements + [f"{name}=={pinned(name)}" for name in ("pytest", "hypothesis")]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME") and not k.startswith("PYTEST_")}
    env.update(PYTHONPATH=str(ROOT), MPLBACKEND="Agg", TF_CPP_MIN_LOG_LEVEL="2")
    env["PATH"] = f"{PY.parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def lowest_env() -> Path:
    """.venv-lowest with exactly the lower bounds; made (from scratch) only when they changed."""
    requirements = lowest_requirements()
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    wanted = hashlib.sha256("\n".join([python, *requirements]).encode()).hexdigest()
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if PY.exists() and STAMP.exists() and STAMP.read_text().strip() == wanted:
            return PY
        start = time.perf_counter()
        venv.create(VENV, with_pip=True, clear=True)
        # --no-compile: pip would byte-compile every installed module; Python compiles the few the
        # tests import when they import them
        pip = _run([str(PY), "-m", "pip", "install", "--disable-pip-version-check", "--only-binary=:all:",
                    "--no-compile", "-q", *requirements], timeout=1200)
        assert pip.returncode == 0, (
            "installing the lowest declared versions failed: " + " ".join(requirements)
            + f"\n{pip.stdout[-3000:]}\n{pip.stderr[-3000:]}")
        STAMP.write_text(wanted)
        print(f"[lowest] made {VENV.name} in {time.perf_counter() - start:.0f} s: {' '.join(requirements)}")
    return PY


def test_every_dependency_has_a_lower_bound():
    bounds = lower_bounds()
    assert {"jax", "numpy", "matplotlib", "ipywidgets"} <= set(bounds)


def test_the_environment_holds_the_lower_bounds(lowest_env):
    names = [r.split("==")[0] for r in lowest_requirements()]
    code = ("import sys\nfrom importlib.metadata import version\n"
            "print(' '.join(f'{n}=={version(n)}' for n in sys.argv[1:]))")
    got = _run([str(lowest_env), "-c", code, *names], timeout=120)
    assert got.returncode == 0, got.stderr
    for requirement, have in zip(lowest_requirements(), got.stdout.split(), strict=True):
        assert Version(have.split("==")[1]) == Version(requirement.split("==")[1]), (requirement, have)


def test_package_tests_at_the_lowest_versions(lowest_env):
    start = time.perf_counter()
    run = _run([str(lowest_env), "-m", "pytest", "-p", "no:cacheprovider", "-q", "-x", *TESTS], timeout=1200)
    print(f"[lowest] {len(TESTS)} test selections in {time.perf_counter() - start:.0f} s")
    assert run.returncode == 0, f"at the lowest declared versions:\n{run.stdout[-6000:]}\n{run.stderr[-3000:]}"


def test_chapters_calls_at_the_lowest_versions(lowest_env):
    start = time.perf_counter()
    run = _run([str(lowest_env), str(SMOKE)], timeout=1200)
    print(f"[lowest] chapters' calls in {time.perf_counter() - start:.0f} s")
    assert run.returncode == 0, f"at the lowest declared versions:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    assert "all chapters' calls ran" in run.stdout
