"""A sweep of bad arguments across every entry point: each is one line on stderr naming the argument, exit 2,
no traceback, and nothing written."""
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

SCRIPTS = REPO_ROOT / "scripts"


@pytest.mark.parametrize("script, args, named", [
    ("train.py", ["c003_1_mnist_cnn_quick", "--strategy", "mirrored", "--cpu-devices", "0"], "--cpu-devices"),
    ("train.py", ["c003_1_mnist_cnn_quick", "--peer-timeout", "-1"], "--peer-timeout"),
    ("train.py", ["c003_1_mnist_cnn_quick", "--results-dir", "{file}"], "--results-dir"),
    ("train.py", ["c003_1_mnist_cnn_quick", "--save-weights", "x.h5"], "--save-weights"),
    ("train.py", ["c000_1_net_222_identity"], "worked example"),
    ("reproduce.py", ["--only", "nope"], "unknown experiment 'nope'"),
    ("reproduce.py", ["--only", "c000_1_net_222_identity", "--results-dir", "{file}"], "--results-dir"),
    ("check_distributed.py", ["--devices", "1"], "--devices"),
    ("check_distributed.py", ["--models", "nope"], "--models"),
    ("bench.py", ["--rounds", "0"], "--rounds"),
    ("bench.py", ["--out", "{file}/bench.json"], "--out"),
    ("bench_gradcheck.py", ["--out", "{file}/bench.json"], "--out"),
    ("compare_gradients.py", ["--model", "net_222", "--out", "{file}/x"], "--out"),
])
def test_a_bad_argument_is_one_line_exit_2_and_writes_nothing(tmp_path, script, args, named):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    args = [arg.replace("{file}", str(a_file)) for arg in args]
    done = subprocess.run([sys.executable, str(SCRIPTS / script), *args], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3",
                                                          "BACKPROP_SUITE_OFFLINE": "1"})
    assert done.returncode == 2, done.stderr[-1500:]
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert named in last, last
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]
