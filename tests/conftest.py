"""Tests run in float64: the identities of the course are checked to ~1e-10."""
import json
import os
import sys
import time
from fnmatch import fnmatch
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXECUTION_REPORT = ROOT / "_build" / "execution-report.json"
BUILD_LOG = ROOT / "_build" / "build.log"          # the strict build's output, for a reader (no test reads it)
STARTED = time.time()                              # this test process's start (tests/test_book.py)


@pytest.fixture(scope="session")
def built_book():
    """The book, built once per test run by `dev.build_book`: every chapter not in the execution cache
    executed once (two at a time, in an empty folder as in Colab), the chapters that train networks once
    more under a second floating-point backend, then the strict build. Returns (exit code, the runs).

    Only tests/test_book.py uses it (the browser checks are collected there), so under `pytest -n 2
    --dist loadfile` (what `python3 dev.py test` runs) one worker builds the book while the other runs
    the rest. (xdist's loadgroup does not group here, with pytest 9: each worker would build its own.)
    """
    sys.path.insert(0, str(ROOT))
    import dev

    code = dev.build_book(second_backend=True, report=EXECUTION_REPORT, log=BUILD_LOG)
    runs = json.loads(EXECUTION_REPORT.read_text()) if EXECUTION_REPORT.exists() else []
    return code, runs


#: Seconds per test file in a `python3 dev.py test` run (the table it prints at its end; a fresh clone after
#: `dev.py book`, 2 cores, 2026-12-07). Under `--dist loadfile` xdist hands out files in collection order, so the longest go
#: first and the short ones fill in at the end: in alphabetical order a 2-minute file picked up last
#: left one worker idle for about a minute.
FILE_SECONDS = {"test_book.py": 531, "test_coursework.py": 260, "test_benchmarks.py": 199, "test_eos.py": 193,
                "test_lowest_versions.py": 165, "test_grader_forged_probes.py": 157, "test_krylov.py": 134,
                "test_dal.py": 94, "test_spectral.py": 93, "test_flows.py": 92, "test_grader_attacks.py": 92,
                "test_central_flow.py": 86, "test_gpu_check.py": 85, "test_beyond_quadratics.py": 80,
                "test_models.py": 65, "test_grader_failclosed.py": 63, "test_notebooks.py": 56, "test_cli.py": 52,
                "test_training.py": 50, "test_widgets.py": 49, "test_stability.py": 37, "test_build_sequence.py": 33,
                "test_symbolic.py": 19}


#: The kind of test files (a name or a pattern; or single tests, ``file::name``) that are more than the
#: package's unit tests:
#: ``grading`` runs the autograder on submissions, ``slow`` executes notebooks or a subprocess run of
#: the GPU path, ``book`` builds a book (test files that build the real one or the mini books say so
#: themselves: ``pytestmark``). `python3 dev.py test --quick` (``dev.QUICK_TESTS``) deselects them all
#: and ``lowest``. A new test file that builds, grades or executes notebooks belongs here.
KINDS = {"test_coursework.py": "grading", "test_grader_*.py": "grading", "test_gpu_check.py": "slow",
         "test_notebooks.py::test_assignment_executes_top_to_bottom_in_a_fresh_kernel": "slow",
         "test_notebooks.py::test_the_execution_gate_allows_only_stub_errors": "slow",
         "test_notebooks.py::test_install_cell_holds_the_installed_versions": "slow",
         "test_notebooks.py::test_colab_button_opens_the_generated_notebook": "book",
         # a chapter's own run (the slowest two of the quick set, issue 26's measurement)
         "test_central_flow.py::test_central_flow_holds_the_sharpness_on_the_chapters_run": "slow",
         "test_dal.py::test_dal_sgd_experiment_shapes_seeds_and_rates": "slow",
         # the slowest unit tests of the quick set (a warm `dev.py test --quick`, 2026-12-07: 5-21 s each,
         # about 150 of its 567 worker-seconds): end-to-end CLI runs and dense-reference comparisons.
         # They run in `python3 dev.py test`, like every test.
         "test_krylov.py::test_krylov_pf_field_matches_dense_eig_at_complex_states": "slow",
         "test_krylov.py::test_krylov_pf_field_matches_dense_eigh_on_an_mlp": "slow",
         "test_krylov.py::test_one_step_errors_on_a_quadratic_pf_is_exact_and_ngf_igr_are_their_exponentials": "slow",
         "test_cli.py::test_eos_writes_npz_json_png": "slow",
         "test_cli.py::test_eos_restores_jax_settings": "slow",
         "test_cli.py::test_eos_synthetic_cifar_runs_the_benchmark_workload_shape": "slow",
         "test_cli.py::test_eos_cifar10_falls_back_only_when_asked_and_says_so": "slow",
         "test_cli.py::test_eos_divergence_exit_code": "slow",
         "test_models.py::test_full_batch_loss_works_with_flows_and_spectral": "slow",
         "test_eos.py::test_player_widget": "slow",
         "test_eos.py::test_divergence_names_step_and_reason": "slow",
         "test_symbolic.py::test_terms_to_order_5_against_picard_ansatz": "slow",
         "test_edge_toy.py::test_gd_holds_the_edge_and_the_central_flow_sits_on_it": "slow",
         # the polynomial toy's 60-step run, and two mpmath integrations (about 6 s each)
         "test_edge_toy.py::test_pf_follows_gradient_flow_through_the_edge_on_the_polynomial_toy": "slow",
         "test_edge_toy.py::test_the_log_cosh_pf_sits_on_the_pole_at_each_arithmetic_s_floor": "slow",
         "test_widgets.py::test_explorer_widget_callbacks": "slow",
         "test_beyond_quadratics.py::test_side_policy_eigenvalue_paths": "slow",
         "test_benchmarks.py::test_a_copied_cache_hits": "slow",
         # the next slowest of the quick set (a cold `-m` run of it, 2026-12-07, afternoon: 17-28 s each,
         # with setup), which kept the quick loop at 4 min 42 s on a fresh clone
         "test_dal_matched.py::test_every_run_stops_at_the_goal_and_reads_its_accuracy_there": "slow",
         "test_pf_run.py::test_on_a_quadratic_the_pf_is_gd_at_every_step": "slow",
         "test_pf_run.py::test_shapes_and_the_sharpness_schedule": "slow",
         "test_pf_run.py::test_the_ritz_value_nearest_the_branch_point_is_read_at_every_step": "slow",
         "test_pf_run.py::test_departure_and_closest_approach": "slow",
         "test_pf_run.py::test_the_corrected_pf_is_the_pf_on_a_quadratic_and_differs_off_it": "slow",
         "test_krylov.py::test_tolerance_stops_early_and_its_estimate_bounds_the_error": "slow",
         "test_krylov.py::test_holomorphic_hessian_vector_products_at_a_complex_point": "slow",
         "test_eos.py::test_sharpness_settles_at_two_over_h_on_digits": "slow",
         "test_cli.py::test_compile_cache_is_written_where_asked_and_settings_restored": "slow",
         # and the next (a loaded `-m` run of three files, 2026-12-07, night: 6-14 s each), which kept
         # a fresh clone's quick loop at 4 min 7 s
         "test_spectral.py::test_float32_params_give_float32_results": "slow",
         "test_spectral.py::test_sharpness_three_methods_agree_psd": "slow",
         "test_spectral.py::test_hessian_symmetric_and_equals_jax_hessian_on_flat_input": "slow",
         "test_dal.py::test_dal1_rate_on_quadratic_is_2g_over_Hg": "slow",
         "test_dal.py::test_minibatch_of_all_examples_is_gradient_descent_and_dal_uses_the_batch": "slow",
         "test_flows.py::test_fields_accept_pytrees": "slow"}


def pytest_configure(config):
    """The markers :data:`KINDS` gives (``book`` and ``lowest`` are declared in pyproject.toml)."""
    config.addinivalue_line("markers", "grading: runs the autograder on submissions (not in --quick)")
    config.addinivalue_line("markers", "slow: executes notebooks or the GPU path's dry run, or is one of the "
                            "slowest unit tests (not in --quick)")


@pytest.hookimpl(tryfirst=True)           # before -m deselects by the markers given here
def pytest_collection_modifyitems(items):
    """Mark each test with its kind (:data:`KINDS`), then run the longest test files first
    (:data:`FILE_SECONDS`; a file not listed counts as short); the order of the tests within a file is
    kept (the sort is stable)."""
    for item in items:
        name = f"{item.path.name}::{getattr(item, 'originalname', item.name)}"
        for kind in {kind for pattern, kind in KINDS.items() if fnmatch(item.path.name, pattern) or pattern == name}:
            item.add_marker(kind)
    items.sort(key=lambda item: -FILE_SECONDS.get(item.path.name, 0))


def pytest_terminal_summary(terminalreporter):
    """Seconds per test file (setup, call and teardown), longest first: where a run's time goes."""
    totals: dict[str, float] = {}
    seen = set()
    for reports in terminalreporter.stats.values():
        for report in reports:
            key = (getattr(report, "nodeid", None), getattr(report, "when", None))
            if hasattr(report, "duration") and key[0] and key not in seen:   # each phase once
                seen.add(key)
                name = report.nodeid.split("::")[0]
                totals[name] = totals.get(name, 0.0) + report.duration
    if EXECUTION_REPORT.exists() and EXECUTION_REPORT.stat().st_mtime >= STARTED:
        runs = json.loads(EXECUTION_REPORT.read_text())
        terminalreporter.write_sep("-", "seconds per chapter execution (this run)")
        for run in sorted(runs, key=lambda r: (r["chapter"], r["backend"])):
            outcome = "ok" if run["error"] is None else "FAILED"
            terminalreporter.write_line(f"{run['seconds']:8.1f}  {run['chapter']} ({run['backend']}) {outcome}")
        if not runs:
            terminalreporter.write_line("  none: every chapter was in the execution cache, and its pass under the "
                                        "second backend recorded")
    if totals:
        terminalreporter.write_sep("-", "seconds per test file")
        for name, seconds in sorted(totals.items(), key=lambda item: -item[1]):
            terminalreporter.write_line(f"{seconds:8.1f}  {name}")
