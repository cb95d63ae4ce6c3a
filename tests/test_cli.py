"""Tests for the command line ``python -m pfcourse eos``: files written, summary, exit codes."""
import json
import subprocess
import sys
import urllib.error
import urllib.request

import jax
import numpy as np
import pytest

from pfcourse.__main__ import build_parser, main

TINY = ["eos", "--dataset", "digits", "--n-train", "60", "--hidden", "8", "--steps", "12", "--eig-every", "4",
        "--k", "2", "--num-iter", "6", "--quiet"]


@pytest.fixture(autouse=True)
def private_compile_cache(tmp_path_factory, monkeypatch):
    """The CLI turns JAX's compilation cache on; here it goes to a folder of this test module."""
    monkeypatch.setenv("PFCOURSE_JAX_CACHE", str(tmp_path_factory.getbasetemp() / "jax-cache"))


def offline(url, timeout=None):
    raise urllib.error.URLError("offline")


def test_eos_writes_npz_json_png(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(TINY + ["--lr", "0.2", "0.4", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "scikit-learn digits" in text and "64-8-10 tanh" in text and "wrote" in text
    arrays = np.load(out / "eos.npz")
    assert arrays["loss"].shape == (2, 13) and arrays["eigenvalues"].shape[2] == 2
    doc = json.loads((out / "eos.json").read_text())
    assert doc["config"]["sizes"] == [64, 8, 10] and doc["config"]["dataset"] == "digits"
    assert [row["h"] for row in doc["summary"]] == [0.2, 0.4]
    assert (out / "eos.png").stat().st_size > 1000
    # the loss recorded in the JSON is the one in the NPZ
    np.testing.assert_allclose(doc["runs"][1]["loss"], arrays["loss"][1])


def test_eos_restores_jax_settings(tmp_path):
    before = jax.config.jax_enable_x64, jax.config.jax_default_matmul_precision
    assert main(TINY + ["--lr", "0.2", "--no-plot", "--float64", "--precision", "high", "--out", str(tmp_path)]) == 0
    assert (jax.config.jax_enable_x64, jax.config.jax_default_matmul_precision) == before
    assert json.loads((tmp_path / "eos.json").read_text())["config"]["dtype"] == "float64"


def test_eos_divergence_exit_code(tmp_path, capsys):
    assert main(TINY + ["--lr", "40", "--no-plot", "--out", str(tmp_path)]) == 3
    assert "diverged at step" in capsys.readouterr().out


def test_eos_bad_input_exit_code(tmp_path, capsys):
    assert main(TINY[:3] + ["--n-train", "5000", "--out", str(tmp_path)]) == 2
    assert "only 1797" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["eos", "--loss", "hinge"])


def test_eos_cifar10_unavailable_stops_and_names_the_fix(tmp_path, capsys, monkeypatch):
    """No silent switch to another data set: exit 2 before training, with the ways out named."""
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    args = ["eos", "--dataset", "cifar10", "--n-train", "60", "--hidden", "8", "--steps", "4", "--eig-every", "2",
            "--k", "1", "--num-iter", "4", "--quiet", "--no-plot", "--cache-dir", str(tmp_path / "cache"),
            "--out", str(tmp_path / "out")]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert "CIFAR-10 is not available" in captured.err and "could not download" in captured.err
    assert "--dataset synthetic-cifar" in captured.err and "--fallback digits" in captured.err
    assert "model:" not in captured.out and not (tmp_path / "out" / "eos.npz").exists()


def test_eos_cifar10_falls_back_only_when_asked_and_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    args = ["eos", "--dataset", "cifar10", "--fallback", "digits", "--n-train", "60", "--hidden", "8", "--steps",
            "4", "--eig-every", "2", "--k", "1", "--num-iter", "4", "--quiet", "--no-plot", "--cache-dir",
            str(tmp_path / "cache"), "--out", str(tmp_path / "out")]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "CIFAR-10 unavailable" in text and "64-8-10" in text


def test_eos_synthetic_cifar_runs_the_benchmark_workload_shape(tmp_path, capsys):
    args = ["eos", "--dataset", "synthetic-cifar", "--n-train", "40", "--hidden", "8", "--steps", "4",
            "--eig-every", "2", "--k", "1", "--num-iter", "4", "--lr", "0.01", "--quiet", "--no-plot",
            "--out", str(tmp_path)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "synthetic CIFAR-shaped data" in text and "3072-8-10 tanh" in text
    doc = json.loads((tmp_path / "eos.json").read_text())
    assert doc["config"]["dataset"] == "synthetic-cifar" and doc["config"]["sizes"] == [3072, 8, 10]
    with pytest.raises(SystemExit):  # only digits may be asked for as a fallback
        build_parser().parse_args(["eos", "--fallback", "synthetic-cifar"])


def test_compile_cache_is_written_where_asked_and_settings_restored(tmp_path, capsys):
    before = jax.config.jax_compilation_cache_dir
    cache = tmp_path / "jax"
    assert main(TINY + ["--lr", "0.2", "--no-plot", "--compile-cache", str(cache), "--out", str(tmp_path / "o")]) == 0
    assert len(list(cache.iterdir())) > 0  # compiled programs were kept
    assert jax.config.jax_compilation_cache_dir == before
    # An unusable folder only turns the cache off, with a warning: the run goes on.
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.warns(UserWarning, match="compilation cache disabled"):
        assert main(TINY + ["--lr", "0.2", "--no-plot", "--compile-cache", str(blocker / "jax"),
                            "--out", str(tmp_path / "o2")]) == 0


def test_module_entry_point_help():
    done = subprocess.run([sys.executable, "-m", "pfcourse", "eos", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "--eig-every" in done.stdout


def test_unwritable_out_is_refused_before_training(tmp_path, capsys):
    """--out used to be checked only after training, so the whole run was lost."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for out in (blocker, blocker / "run"):
        assert main(TINY + ["--lr", "0.2", "--no-plot", "--out", str(out)]) == 2
        captured = capsys.readouterr()
        assert "is not a writable folder" in captured.err and "pass another --out" in captured.err
        assert "data:" not in captured.out  # refused before the data were even loaded


def test_cache_dir_that_is_a_file_gives_the_data_modules_error(tmp_path, capsys):
    """A --cache-dir that is a file used to end in a bare FileExistsError from mkdir."""
    from pfcourse import data

    blocker = tmp_path / "cache"
    blocker.write_text("not a folder")
    for dataset in ("cifar10", "digits"):  # checked before any data are loaded, whatever the data set
        args = ["eos", "--dataset", dataset, "--n-train", "60", "--hidden", "8", "--steps", "2", "--quiet",
                "--no-plot", "--cache-dir", str(blocker), "--out", str(tmp_path / "out")]
        assert main(args) == 2
        captured = capsys.readouterr()
        assert "is a file, not a folder" in captured.err and "data:" not in captured.out
    for cache in (blocker, blocker / "sub"):
        with pytest.raises(ValueError, match="is a file, not a folder.*cache_dir"):
            data.load_cifar10(n_train=10, cache_dir=cache, download=True)
