"""A sweep of bad arguments across every entry point: each is one line on stderr naming the argument, exit 2,
no traceback, and nothing written."""
import json
import re
import sys
import zipfile

import pytest
from conftest import REPO_ROOT, run_child, wheel_of

SCRIPTS = REPO_ROOT / "scripts"


# Refused after TensorFlow loads (5-13 s each): scripts/test.sh --all runs them.
LOADS_TENSORFLOW = pytest.mark.full


@pytest.mark.parametrize("script, args, named", [
    pytest.param("train.py", ["c003_1_mnist_cnn_quick", "--strategy", "mirrored", "--cpu-devices", "0"],
                 "--cpu-devices", marks=LOADS_TENSORFLOW),
    ("train.py", ["c003_1_mnist_cnn_quick", "--peer-timeout", "-1"], "--peer-timeout"),
    pytest.param("train.py", ["c003_1_mnist_cnn_quick", "--results-dir", "{file}"], "--results-dir",
                 marks=LOADS_TENSORFLOW),
    ("train.py", ["c003_1_mnist_cnn_quick", "--save-weights", "x.h5"], "--save-weights"),
    ("train.py", ["c000_1_net_222_identity"], "worked example"),
    ("reproduce.py", ["--only", "nope"], "unknown experiment 'nope'"),
    ("reproduce.py", ["--only", "c000_1_net_222_identity", "--results-dir", "{file}"], "--results-dir"),
    ("check_distributed.py", ["--devices", "1"], "--devices"),
    ("check_distributed.py", ["--models", "nope"], "--models"),
    ("bench.py", ["--rounds", "0"], "--rounds"),
    ("bench.py", ["--out", "{file}/bench.json"], "--out"),
    pytest.param("bench.py", ["--batch-sizes", "32", "100000"], "--batch-sizes 100000", marks=LOADS_TENSORFLOW),
    pytest.param("bench_gradcheck.py", ["--out", "{file}/bench.json"], "--out", marks=LOADS_TENSORFLOW),
    pytest.param("bench_gradcheck.py", ["--models", "zoo,ResNet5O"], "--models: ResNet5O is not a benchmarked model",
                 marks=LOADS_TENSORFLOW),
    ("profile_manual_layers.py", ["--out", "{file}/profile.json"], "--out"),
    ("profile_step_ops.py", ["--out", "{file}/profile.json"], "--out"),
    ("profile_step_ops.py", ["--precisions", "float16"], "--precisions"),
    pytest.param("profile_step_ops.py", ["--batch-size", "4000"], "--batch-size 4000", marks=LOADS_TENSORFLOW),
    ("check_gradients.py", ["--model", "net_222", "--out", "{file}/x"], "--out"),
])
def test_a_bad_argument_is_one_line_exit_2_and_writes_nothing(tmp_path, script, args, named):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    args = [arg.replace("{file}", str(a_file)) for arg in args]
    done = run_child([sys.executable, str(SCRIPTS / script), *args], capture_output=True, text=True,
                     timeout=300, cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3",
                                                          "BACKPROP_SUITE_OFFLINE": "1"})
    assert done.returncode == 2, done.stderr[-1500:]
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert named in last, last
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


ENTRY_POINTS = ("train.py", "reproduce.py", "check_gradients.py", "check_distributed.py", "bench.py",
                "bench_gradcheck.py", "profile_manual_layers.py", "profile_step_ops.py")
# A line of TensorFlow's C++ logging (I/W/E/F, then MMDD) or Abseil's note that precedes it.
TF_LOG_LINE = re.compile(r"^[IWEF]\d{4} |absl::InitializeLog", re.MULTILINE)


def run_script(script, args, cwd, **env):
    return run_child([sys.executable, str(SCRIPTS / script), *args], capture_output=True, text=True,
                     timeout=300, cwd=cwd, env={"PATH": "/usr/bin:/bin", "BACKPROP_SUITE_OFFLINE": "1", **env})


@pytest.mark.parametrize("script", ENTRY_POINTS)
def test_help_answers_without_loading_tensorflow(script):
    probe = (f"import runpy, sys; sys.argv = [{script!r}, '--help']\n"
             f"try: runpy.run_path({str(SCRIPTS / script)!r}, run_name='__main__')\n"
             "except SystemExit: pass\n"
             "print('LOADED', 'tensorflow' in sys.modules or 'keras' in sys.modules)")
    done = run_child([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert "usage:" in done.stdout and done.stdout.strip().endswith("LOADED False"), done.stdout[-500:]


@pytest.mark.full  # training runs
def test_a_run_prints_no_tensorflow_log_line_unless_asked(tmp_path):
    """The default is quiet; TF_CPP_MIN_LOG_LEVEL=0 brings TensorFlow's lines back, so the probe can see them."""
    args = ["--model", "net_222", "--out", str(tmp_path / "check")]
    quiet = run_script("check_gradients.py", args, tmp_path)
    assert quiet.returncode == 0, quiet.stderr[-1500:]
    assert not TF_LOG_LINE.search(quiet.stderr), quiet.stderr[:1500]
    loud = run_script("check_gradients.py", args, tmp_path, TF_CPP_MIN_LOG_LEVEL="0")
    assert loud.returncode == 0 and TF_LOG_LINE.search(loud.stderr), loud.stderr[:1500]


@pytest.mark.full  # training runs
def test_train_overrides_make_a_recorded_variation_and_leave_the_spec_results_alone(tmp_path):
    """--epochs/--batch-size/--learning-rate/--dataset: a run of another setting, in its own folder, verdict
    'measured only' (the spec's expectations are for the spec's settings), and a TensorBoard log on request."""
    done = run_script("train.py", ["c002_1_two_layer_net_quick", "--epochs", "1", "--batch-size", "50",
                                   "--learning-rate", "0.5", "--dataset", "mnist-5k", "--results-dir",
                                   str(tmp_path / "results"), "--tensorboard", str(tmp_path / "tb")], tmp_path)
    assert done.returncode == 0, done.stderr[-1500:]
    assert not TF_LOG_LINE.search(done.stderr), done.stderr[:1500]
    [folder] = (tmp_path / "results").iterdir()
    assert folder.name == "c002_1_two_layer_net_quick+epochs=1+batch_size=50+learning_rate=0.5"
    record = json.loads((folder / "metrics.json").read_text())
    assert record["spec"]["overrides"] == {"epochs": 1, "batch_size": 50, "learning_rate": 0.5}
    assert (record["spec"]["epochs"], record["metrics"]["epochs"], record["spec"]["batch_size"]) == (1, 1, 50)
    assert record["verdict"] == "measured only (spec overridden: epochs 1, batch_size 50, learning_rate 0.5)"
    assert record["checks"], "the spec's expectations are still shown, met or not"
    assert list((tmp_path / "tb" / "train").glob("events.out.tfevents.*"))


@pytest.mark.parametrize("args, named", [
    (["--epochs", "0"], "--epochs"), (["--learning-rate", "nan"], "--learning-rate"),
    (["--dataset", "cifar"], "--dataset"), (["--tensorboard", "tb", "--strategy", "multiworker"], "--tensorboard"),
])
def test_a_bad_override_is_refused_before_anything_runs(tmp_path, args, named):
    done = run_script("train.py", ["c002_1_two_layer_net_quick", "--results-dir", str(tmp_path / "r"), *args],
                      tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert named in done.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "r").exists()


def test_the_wheel_installs_one_package_and_declares_every_pinned_requirement(tmp_path):
    """The suite's distribution has one top-level package, backprop_suite (models/ inside it as
    backprop_suite.models, the verifier not inside it but required), and it requires what requirements.txt pins
    (pytest and tensorboard as extras)."""
    wheel = wheel_of(REPO_ROOT, tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")} \
        == {"backprop_suite"}
    for module in ("models/zoo.py", "worked_examples/pca.py", "cli.py"):
        assert f"backprop_suite/{module}" in names
    assert not [name for name in names if "manual/" in name or name.endswith("methods.py")]
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    declared = {re.split(r"[<>=;\[ ]", line.removeprefix("Requires-Dist: "))[0].lower()
                for line in metadata.splitlines() if line.startswith("Requires-Dist:")}
    pinned = {line.split("==")[0].lower() for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
              if line and not line.startswith("#")}
    assert pinned <= declared, pinned - declared
    assert "keras-gradcheck" in declared
