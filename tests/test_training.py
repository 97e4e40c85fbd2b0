"""Training through the real entry points: it learns, its artifacts are well formed, it is
reproducible, and a killed run resumes to exactly the history of an uninterrupted one."""
import csv
import json
import signal
import subprocess
import sys
import time

import matplotlib.image
import pytest
from conftest import REPO_ROOT, run_child, tiny_spec

from backprop_suite.artifacts import HISTORY_COLUMNS, draw_model
from backprop_suite.experiment import load_spec
from backprop_suite.models import build_model
from backprop_suite.training import train_experiment

TRAIN_SCRIPT = REPO_ROOT / "scripts" / "train.py"


def read_history(path):
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("short_run")
    with pytest.MonkeyPatch.context() as patch:  # for this run only, not for the tests that follow
        patch.setenv("BACKPROP_SUITE_OFFLINE", "1")
        record = train_experiment(tiny_spec(tmp_path), tmp_path / "results")
    return record, tmp_path / "results" / "tiny"


def test_short_run_learns_well_above_chance(short_run):
    record, out = short_run
    losses = [float(row["loss"]) for row in read_history(out / "history.csv")]
    assert losses[-1] < 0.7 * losses[0]
    assert record["metrics"]["test_accuracy"] > 0.8  # chance is 0.1 on ten balanced classes
    assert record["verdict"] == "reproduced"


def test_history_csv_has_one_row_per_epoch_with_fixed_columns(short_run):
    _, out = short_run
    rows = read_history(out / "history.csv")
    assert list(rows[0]) == list(HISTORY_COLUMNS)
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3]
    assert all(0 <= float(row["val_accuracy"]) <= 1 for row in rows)


def test_metrics_json_records_metrics_data_provenance_versions_and_machine(short_run):
    record, out = short_run
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(record))
    assert {"experiment", "claims", "verdict", "checks", "metrics", "data", "spec", "seed", "wall_time_s",
            "environment"} <= set(saved)
    assert saved["data"]["name"] == "mnist-5k" and len(saved["data"]["sha256"]) == 64
    assert (saved["data"]["fit_samples"], saved["data"]["validation_samples"], saved["data"]["test_samples"]) \
        == (3600, 400, 1000)
    assert {"tensorflow", "keras", "python", "cpu_count"} <= set(saved["environment"])
    assert not (out / ".in_progress").exists()


def test_plots_are_pngs_that_open(short_run):
    _, out = short_run
    for name in ("acc.png", "loss.png", "model.png"):
        image = matplotlib.image.imread(out / name)
        assert image.ndim == 3 and min(image.shape[:2]) > 100, name


@pytest.mark.full  # TensorFlow in a child process, 5-8 s
def test_same_seed_and_data_give_an_identical_history_csv(tmp_path, short_run):
    _, first = short_run
    train_experiment(tiny_spec(tmp_path), tmp_path / "again")
    assert (tmp_path / "again" / "tiny" / "history.csv").read_bytes() == (first / "history.csv").read_bytes()


def run_train_script(*args, **kwargs):
    return run_child([sys.executable, str(TRAIN_SCRIPT), *map(str, args)], capture_output=True, text=True,
                     timeout=600, **kwargs)


@pytest.mark.full  # a killed and resumed run (30 s)
def test_killed_run_resumes_to_the_history_of_an_uninterrupted_run(tmp_path):
    # The CNN has dropout: an exact match needs the optimizer state and the dropout RNG state restored too.
    spec = tiny_spec(tmp_path, "cnn", model='name = "mnist_cnn"', epochs=4, batch_size=128, learning_rate=0.001)
    state_file = tmp_path / "killed" / "cnn" / ".in_progress" / "state.json"
    process = subprocess.Popen([sys.executable, str(TRAIN_SCRIPT), str(spec.path), "--results-dir",
                                str(tmp_path / "killed")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (state_file.exists() and json.loads(state_file.read_text())["epochs_done"] >= 2):
        assert process.poll() is None and time.monotonic() < deadline, "training ended before it could be killed"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_after = json.loads(state_file.read_text())["epochs_done"]
    assert killed_after < 4 and not (tmp_path / "killed" / "cnn" / "metrics.json").exists()

    resumed = run_train_script(spec.path, "--results-dir", tmp_path / "killed")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming after epoch {killed_after}/4" in resumed.stdout

    train_experiment(spec, tmp_path / "uninterrupted")
    resumed_history = (tmp_path / "killed" / "cnn" / "history.csv").read_text()
    assert resumed_history == (tmp_path / "uninterrupted" / "cnn" / "history.csv").read_text()
    metrics = json.loads((tmp_path / "killed" / "cnn" / "metrics.json").read_text())
    assert metrics["resumed_after_epoch"] == killed_after and metrics["metrics"]["epochs"] == 4


@pytest.mark.full  # training runs
def test_resuming_with_a_changed_spec_is_refused(tmp_path):
    spec = tiny_spec(tmp_path, epochs=1)
    state_dir = tmp_path / "results" / "tiny" / ".in_progress"
    state_dir.mkdir(parents=True)
    (state_dir / "state.json").write_text(json.dumps({"fingerprint": {"spec": "something else"}}))
    result = run_train_script(spec.path, "--results-dir", tmp_path / "results")
    assert result.returncode == 2 and "different spec or data; rerun with --restart" in result.stderr


@pytest.mark.full  # TensorFlow in a child process, 5-8 s
@pytest.mark.parametrize("args, message", [
    (["no_such_experiment"], "error: unknown experiment 'no_such_experiment'"),
    (["c003_1_mnist_cnn", "--data-path", "/nonexistent/mnist.npz"], "error: /nonexistent/mnist.npz: file not found"),
])
def test_script_reports_bad_input_in_one_line_without_a_traceback(args, message):
    result = run_train_script(*args)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(message)
    assert "Traceback" not in result.stderr


def test_without_graphviz_the_model_is_drawn_as_dot_with_a_hint(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` program on this PATH
    assert draw_model(build_model("two_layer_net"), tmp_path) == "model.dot"
    assert (tmp_path / "model.dot").read_text().startswith("digraph")
    assert "affine1" in (tmp_path / "model_summary.txt").read_text()
    assert "apt-get install graphviz" in capsys.readouterr().out


def compiled_two_layer_net():
    import keras

    keras.utils.set_random_seed(0)
    model = build_model("two_layer_net", hidden_size=8)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def test_checkpoint_goes_back_one_epoch_when_a_cluster_agrees_on_it(tmp_path):
    """A worker killed while the others saved epoch 3 holds epoch 2: all then resume after epoch 2, so a
    worker holding epoch 3 must restore exactly the model and history it had after epoch 2."""
    import keras
    import numpy as np

    from backprop_suite.checkpoint import EpochCheckpoint
    from gradcheck.errors import InputError

    rng = np.random.default_rng(0)
    x, y = rng.random((64, 784)).astype("float32"), np.eye(10, dtype="float32")[rng.integers(0, 10, 64)]
    after = {}
    keep = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: after.update(
        {epoch + 1: [w.copy() for w in model.get_weights()]}))
    model = compiled_two_layer_net()
    model.fit(x, y, epochs=3, batch_size=16, validation_data=(x, y), shuffle=False, verbose=0,
              callbacks=[EpochCheckpoint(tmp_path / "state", {"spec": "s"}), keep])

    worker = EpochCheckpoint(tmp_path / "state", {"spec": "s"})
    assert worker.restore(restored := compiled_two_layer_net(), agree=lambda mine: mine - 1) == 2
    assert all(np.array_equal(a, b) for a, b in zip(restored.get_weights(), after[2], strict=True))
    assert [row["epoch"] for row in worker.rows] == [1, 2]
    fresh = compiled_two_layer_net()
    assert EpochCheckpoint(tmp_path / "state", {"spec": "s"}).restore(fresh, agree=lambda mine: 0) == 0
    with pytest.raises(InputError, match="resumes after epoch 1, but this worker holds epoch 3 only"):
        EpochCheckpoint(tmp_path / "state", {"spec": "s"}).restore(compiled_two_layer_net(), agree=lambda mine: 1)


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["c003_1_mnist_cnn", "c002_1_two_layer_net", "c003_1_fashion_mnist_cnn"])
def test_full_profile_training_runs_meet_their_expectations(experiment, tmp_path, monkeypatch):
    """The note-exact training runs (about 10 minutes together on 2 cores): `bash scripts/test.sh -m slow`.
    The default run trains the same code on tiny specs."""
    monkeypatch.setenv("BACKPROP_SUITE_OFFLINE", "1")
    record = train_experiment(load_spec(experiment), tmp_path)
    assert record["verdict"] == "reproduced" and all(check["met"] for check in record["checks"])


def test_after_a_cluster_rollback_the_next_save_keeps_the_epoch_it_redid_from(tmp_path):
    """Rolled back to epoch 2 and epoch 3 redone: the new state's "previous" is epoch 2 (its weights still on
    disk), so a second failure during epoch 4 can again resume from epoch 2 or 3 without --restart."""
    import numpy as np

    from backprop_suite.checkpoint import EpochCheckpoint

    rng = np.random.default_rng(0)
    x, y = rng.random((64, 784)).astype("float32"), np.eye(10, dtype="float32")[rng.integers(0, 10, 64)]
    model = compiled_two_layer_net()
    model.fit(x, y, epochs=3, batch_size=16, validation_data=(x, y), shuffle=False, verbose=0,
              callbacks=[EpochCheckpoint(tmp_path / "state", {"spec": "s"})])
    worker = EpochCheckpoint(tmp_path / "state", {"spec": "s"})
    model = compiled_two_layer_net()
    assert worker.restore(model, agree=lambda mine: mine - 1) == 2  # the cluster agreed on 2
    model.fit(x, y, epochs=3, initial_epoch=2, batch_size=16, validation_data=(x, y), shuffle=False, verbose=0,
              callbacks=[worker])
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    assert state["epochs_done"] == 3 and state["previous"]["epochs_done"] == 2
    assert sorted(p.name for p in (tmp_path / "state").glob("*.weights.npz")) == \
        ["epoch-0002.weights.npz", "epoch-0003.weights.npz"]
    again = EpochCheckpoint(tmp_path / "state", {"spec": "s"})
    assert again.restore(compiled_two_layer_net(), agree=lambda mine: 2) == 2


@pytest.mark.full  # training runs
def test_mixed_bfloat16_trains_in_bfloat16_with_float32_weights_and_learns(tmp_path, monkeypatch):
    """precision = "mixed_bfloat16": every layer computes in bfloat16 and keeps float32 weights (Keras's dtype
    policy), the run learns as the float32 one does, and the process's global policy is left as it was."""
    import keras

    from backprop_suite.experiment import with_overrides
    from backprop_suite.training import build_compiled_model

    monkeypatch.setenv("BACKPROP_SUITE_OFFLINE", "1")
    spec = with_overrides(tiny_spec(tmp_path), precision="mixed_bfloat16")
    model = build_compiled_model(spec)
    assert {layer.compute_dtype for layer in model.layers} == {"bfloat16"}
    assert {variable.dtype for variable in model.weights} == {"float32"}
    assert keras.config.dtype_policy().name == "float32"
    record = train_experiment(spec, tmp_path / "results")
    assert record["spec"]["precision"] == "mixed_bfloat16"
    assert record["metrics"]["test_accuracy"] > 0.8  # as the float32 short run above
    assert keras.config.dtype_policy().name == "float32"


def test_an_unknown_precision_names_the_choices(tmp_path):
    from backprop_suite.errors import SpecError
    from backprop_suite.experiment import with_overrides

    with pytest.raises(SpecError, match="--precision 'float16': unknown; known: float32, mixed_bfloat16"):
        with_overrides(tiny_spec(tmp_path), precision="float16")
