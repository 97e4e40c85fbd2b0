"""Faults a user or a hostile machine brings: an interrupted run whose saved state is damaged, a second writer,
an unwritable results folder, a damaged stored result. Each ends in one line with a remedy that works, and
nothing is lost or silently overwritten."""
import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO_ROOT, tiny_spec

from backprop_suite import checkpoint as checkpoint_module
from backprop_suite.reproduce import out_of_date_reason, run_experiments
from backprop_suite.training import train_experiment
from gradcheck.errors import InputError

pytestmark = pytest.mark.full  # interrupted and damaged training runs, 5-15 s each: scripts/test.sh --all


def script(name):
    spec = importlib.util.spec_from_file_location(f"{name}_script", REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def interrupted(tmp_path, monkeypatch):
    """A tiny 2-epoch run interrupted right after epoch 1 was checkpointed: (spec, results root, state folder)."""
    monkeypatch.setenv("BACKPROP_SUITE_OFFLINE", "1")
    spec = tiny_spec(tmp_path, epochs=2)
    original = checkpoint_module.EpochCheckpoint.on_epoch_end

    def stop_after_the_first(self, epoch, logs=None):
        original(self, epoch, logs)
        raise KeyboardInterrupt  # as Ctrl-C would, once epoch 1 is safely saved

    with monkeypatch.context() as patch:
        patch.setattr(checkpoint_module.EpochCheckpoint, "on_epoch_end", stop_after_the_first)
        with pytest.raises(KeyboardInterrupt):
            train_experiment(spec, tmp_path / "results")
    state = tmp_path / "results" / "tiny" / ".in_progress"
    assert json.loads((state / "state.json").read_text())["epochs_done"] == 1
    return spec, tmp_path / "results", state


DAMAGE = {
    "truncated weights": lambda state: (state / "epoch-0001.weights.npz").write_bytes(
        (state / "epoch-0001.weights.npz").read_bytes()[:300]),
    "garbage weights": lambda state: (state / "epoch-0001.weights.npz").write_bytes(b"garbage" * 10),
    "deleted weights": lambda state: (state / "epoch-0001.weights.npz").unlink(),
    "weights that do not fit the model": lambda state: np.savez(state / "epoch-0001.weights.npz", np.zeros(3)),
    "state.json is []": lambda state: (state / "state.json").write_text("[]"),
    "truncated state.json": lambda state: (state / "state.json").write_text('{"fingerprint": {"sp'),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_checkpoint_is_one_line_with_restart_and_restart_works(interrupted, damage, capsys):
    spec, results, state = interrupted
    DAMAGE[damage](state)
    train = script("train")
    assert train.main([str(spec.path), "--results-dir", str(results)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "--restart" in last and "Traceback" not in last
    assert train.main([str(spec.path), "--results-dir", str(results), "--restart"]) == 0
    assert json.loads((results / "tiny" / "metrics.json").read_text())["metrics"]["epochs"] == 2


def test_the_main_job_discards_a_damaged_checkpoint_with_a_line_and_trains_afresh(interrupted, capsys):
    spec, results, state = interrupted
    DAMAGE["garbage weights"](state)
    [record] = run_experiments([spec], results)
    assert "unreadable checkpoint weights" in capsys.readouterr().out and record["metrics"]["epochs"] == 2
    train_experiment(spec, results.parent / "uninterrupted")
    assert (results / "tiny" / "history.csv").read_text() == \
        (results.parent / "uninterrupted" / "tiny" / "history.csv").read_text()  # as if never interrupted


def test_a_resumed_run_equals_an_uninterrupted_one(interrupted, capsys):
    spec, results, _ = interrupted
    train_experiment(spec, results)
    assert "resuming after epoch 1/2" in capsys.readouterr().out
    train_experiment(spec, results.parent / "uninterrupted")
    assert (results / "tiny" / "history.csv").read_text() == \
        (results.parent / "uninterrupted" / "tiny" / "history.csv").read_text()


HOLD_THE_LOCK = """
import sys, time
from backprop_suite.artifacts import sole_writer

with sole_writer(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_second_writer_is_refused_with_the_first_named_and_a_dead_writers_lock_is_taken_over(tmp_path,
                                                                                                 monkeypatch):
    monkeypatch.setenv("BACKPROP_SUITE_OFFLINE", "1")
    spec = tiny_spec(tmp_path, epochs=1)
    out = tmp_path / "results" / "tiny"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_LOCK, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        (out / ".tmp-metrics.json.abc123.json").write_text("{")  # what a killed writer leaves
        with pytest.raises(InputError, match=f"process {holder.pid} on .* is writing these results"):
            train_experiment(spec, tmp_path / "results")
        assert not (out / "metrics.json").exists()
    finally:
        holder.kill()  # SIGKILL: no chance to clean up; the kernel releases its lock
        holder.wait()
    assert train_experiment(spec, tmp_path / "results")["verdict"] == "reproduced"
    assert not list(out.glob(".tmp-*"))  # the dead writer's temporary file is gone


def test_a_results_location_that_cannot_be_written_fails_before_training(tmp_path, monkeypatch):
    (tmp_path / "results").write_text("a file where the folder should be")
    spec = tiny_spec(tmp_path, epochs=1)
    monkeypatch.setattr("backprop_suite.training.load_dataset", lambda *a: pytest.fail("training began"))
    with pytest.raises(InputError, match="cannot write results there.*--results-dir"):
        train_experiment(spec, tmp_path / "results")


def test_train_py_exits_1_when_the_verdict_is_failed(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKPROP_SUITE_OFFLINE", "1")
    path = tiny_spec(tmp_path, epochs=1).path
    path.write_text(path.read_text().replace("at_least = 0.5", "at_least = 0.999"))
    assert script("train").main([str(path), "--results-dir", str(tmp_path / "results")]) == 1


def test_a_damaged_or_incomplete_stored_result_is_out_of_date_and_force_remakes_it(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKPROP_SUITE_OFFLINE", "1")
    spec = tiny_spec(tmp_path, epochs=1)
    results = tmp_path / "results"
    run_experiments([spec], results)
    assert out_of_date_reason(spec, results) is None
    (results / "tiny" / "acc.png").unlink()
    assert out_of_date_reason(spec, results) == "its acc.png is missing"
    metrics = results / "tiny" / "metrics.json"
    metrics.write_text(metrics.read_text()[:50])
    assert out_of_date_reason(spec, results).startswith("its stored result is unreadable")
    [record] = run_experiments([spec], results)
    assert record["status"] == "ran" and json.loads(metrics.read_text())["verdict"] == "reproduced"
    assert (results / "tiny" / "acc.png").is_file()
    metrics.write_text("{")
    [record] = run_experiments([spec], results, force=True)
    assert record["status"] == "ran"


def test_force_restarts_an_interrupted_run_of_an_edited_spec(interrupted, capsys):
    spec, results, state = interrupted
    spec.path.write_text(spec.path.read_text().replace("seed = 7", "seed = 8"))
    from backprop_suite.experiment import load_spec

    edited = load_spec(spec.path)
    [record] = run_experiments([edited], results, force=True)
    assert record["status"] == "ran" and record["seed"] == 8 and not state.exists()
