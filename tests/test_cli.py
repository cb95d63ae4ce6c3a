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


def test_eos_cifar10_falls_back_and_says_so(tmp_path, capsys, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    args = ["eos", "--dataset", "cifar10", "--n-train", "60", "--hidden", "8", "--steps", "4", "--eig-every", "2",
            "--k", "1", "--num-iter", "4", "--quiet", "--no-plot", "--cache-dir", str(tmp_path / "cache"),
            "--out", str(tmp_path / "out")]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "CIFAR-10 unavailable" in text and "64-8-10" in text


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
    args = ["eos", "--dataset", "cifar10", "--n-train", "60", "--hidden", "8", "--steps", "2", "--quiet",
            "--no-plot", "--cache-dir", str(blocker), "--out", str(tmp_path / "out")]
    assert main(args) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    for cache in (blocker, blocker / "sub"):
        with pytest.raises(ValueError, match="is a file, not a folder.*cache_dir"):
            data.load_cifar10(n_train=10, cache_dir=cache, download=True)
