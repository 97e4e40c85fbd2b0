"""Bad input is one line and exit 2, found before the work: data that does not fit the model, a user's builder or
module that fails, a batch larger than the data, an output that cannot be written, a TensorBoard folder that is a
file, an empty test split, a damaged resume state. Exit 1 is kept for a gradient that disagrees or a failed verdict."""
import json
import sys

import numpy as np
import pytest
from conftest import REPO_ROOT, run_child, tiny_spec
from test_faults import interrupted, script  # noqa: F401  (interrupted: a fixture)

from backprop_suite.reproduce import run_experiments


def one_line_exit_2(code, capsys, *named):
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err[-3:]
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    for text in named:
        assert text in err[0], err[0]
    return err[0]


# ---- 6. data that does not fit the model ------------------------------------------------------------------------

RNG = np.random.default_rng(0)
MISFITS = {  # two_layer_net: 784 inputs, 10 softmax outputs, categorical cross-entropy
    "wrong target width": (RNG.random((4, 784)), np.eye(3)[[0, 1, 2, 0]], "y has shape (4, 3)"),
    "wrong feature count": (RNG.random((4, 100)), np.eye(10)[[0, 1, 2, 3]], "x has shape (4, 100)"),
    "rank-3 x": (RNG.random((4, 28, 28)), np.eye(10)[[0, 1, 2, 3]], "x has shape (4, 28, 28)"),
    "string x": (np.array([["a"] * 784] * 4), np.eye(10)[[0, 1, 2, 3]], "x holds <U1 values"),
    "integer labels with a categorical loss": (RNG.random((4, 784)), np.array([0, 1, 2, 3]),
                                               "sparse_categorical_crossentropy"),
}


@pytest.mark.parametrize("misfit", MISFITS)
def test_data_that_does_not_fit_the_model_is_one_line_and_exit_2_not_a_failed_check(tmp_path, misfit, capsys):
    x, y, named = MISFITS[misfit]
    np.savez(tmp_path / "batch.npz", x=x, y=y)
    code = script("check_gradients").main(["--model", "two_layer_net", "--data", str(tmp_path / "batch.npz"),
                                             "--out", str(tmp_path / "out")])
    one_line_exit_2(code, capsys, named)
    assert not (tmp_path / "out").exists()


def test_integer_labels_fit_a_sparse_cross_entropy(tmp_path):
    """The fit check refuses only what Keras would not take: integer labels under their own loss pass."""
    np.savez(tmp_path / "batch.npz", x=RNG.random((4, 784)), y=np.array([0, 1, 2, 3]))
    assert script("check_gradients").main(
        ["--model", "two_layer_net", "--data", str(tmp_path / "batch.npz"), "--loss", "sparse_categorical_crossentropy",
         "--fd-entries", "2", "--directions", "1", "--out", str(tmp_path / "out")]) == 0


# ---- 7. the user's module or builder fails ---------------------------------------------------------------------

BUILDERS = {
    "the function raises": ("import keras\n\ndef build():\n    raise ValueError('no such width')\n",
                            "build", ["failed", ".py:4: ValueError: no such width"]),
    "the function needs an argument": ("def build(width):\n    return None\n", "build", ["needs width"]),
    "a syntax error": ("def build(:\n    pass\n", "build", [".py:1: SyntaxError"]),
    "the module raises at import": ("import keras\nWIDTH = 1 / 0\n", "build", [".py:2: ZeroDivisionError"]),
    "the builder calls SystemExit(3)": ("import sys\n\ndef build():\n    sys.exit(3)\n", "build",
                                        ["it called SystemExit(3)", ".py:4"]),
}


@pytest.mark.parametrize("case", BUILDERS)
def test_a_users_builder_that_fails_is_named_by_its_own_file_and_line(tmp_path, monkeypatch, case, capsys):
    source, function, named = BUILDERS[case]
    module = f"user_builder_{abs(hash(case))}"
    (tmp_path / f"{module}.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    code = script("check_gradients").main(["--model", f"{module}:{function}", "--out", str(tmp_path / "out")])
    line = one_line_exit_2(code, capsys, *named)
    assert f"{module}" in line and "backprop_suite" not in line


# ---- 8. a batch larger than the data -----------------------------------------------------------------------------


def test_a_batch_larger_than_the_digits_is_named_with_the_largest_that_fits(tmp_path, capsys):
    code = script("check_gradients").main(["--model", "mnist_cnn", "--batch-size", "100000",
                                             "--out", str(tmp_path / "out")])
    one_line_exit_2(code, capsys, "--batch-size 100000", "at most 4000")


# ---- 9, 10: outputs that cannot be written, checked first; a non-zip .keras --------------------------------------


@pytest.mark.parametrize("script_name, args, named", [
    ("check_gradients.py", ["--model", "net_222", "--out", "/proc/gc"], "--out"),
    ("train.py", ["c003_1_mnist_cnn_quick", "--save-weights", "/proc/x/w.weights.h5"], "--save-weights"),
    ("train.py", ["c003_1_mnist_cnn_quick", "--tensorboard", "{file}"], "--tensorboard"),
    ("train.py", ["c003_1_mnist_cnn_quick", "--save-weights", "{folder}.weights.h5"], "--save-weights"),
    ("check_gradients.py", ["--model", "{file}.keras", "--out", "{out}"], "not a Keras .keras archive"),
])
def test_an_output_that_cannot_be_written_is_refused_before_any_work(tmp_path, script_name, args, named):
    (tmp_path / "a_file").write_text("text")
    (tmp_path / "a_file.keras").write_text("text, not a zip archive")
    (tmp_path / "a_folder.weights.h5").mkdir()
    args = [a.replace("{file}", str(tmp_path / "a_file")).replace("{folder}", str(tmp_path / "a_folder"))
            .replace("{out}", str(tmp_path / "out")) for a in args]
    done = run_child([sys.executable, str(REPO_ROOT / "scripts" / script_name), *args,
                      *(["--results-dir", str(tmp_path / "results")] if script_name == "train.py" else [])],
                     capture_output=True, text=True, timeout=300, cwd=tmp_path,
                     env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3", "BACKPROP_SUITE_OFFLINE": "1"})
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-1500:]
    assert named in done.stderr.strip().splitlines()[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "a_file.keras", "a_folder.weights.h5"]


# ---- 11. an empty test split; a refused run leaves no folder ---------------------------------------------------


def test_data_with_an_empty_test_split_is_refused_before_training_and_leaves_no_folder(tmp_path, capsys):
    rng = np.random.default_rng(0)
    labels = (np.arange(200) % 10).astype(np.uint8)
    np.savez(tmp_path / "no_test.npz", x_train=rng.integers(0, 256, (200, 28, 28), dtype=np.uint8),
             y_train=labels, x_test=np.zeros((0, 28, 28), np.uint8), y_test=np.zeros(0, np.uint8))
    spec = tiny_spec(tmp_path, epochs=1)
    code = script("train").main([str(spec.path), "--dataset", "mnist", "--data-path", str(tmp_path / "no_test.npz"),
                                 "--results-dir", str(tmp_path / "results")])
    one_line_exit_2(code, capsys, "no_test.npz", "test split is empty")
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


# ---- 12. a resume state of the right keys and the wrong types ----------------------------------------------------

WRONG_TYPES = {
    "rng_states": "oops", "epochs_done": "1", "rows": [{"epoch": 1}], "seconds": None, "weights": ["x"],
}


@pytest.mark.full  # an interrupted training run, then the main job (10-15 s each)
@pytest.mark.parametrize("key", WRONG_TYPES)
def test_a_resume_state_of_the_wrong_types_is_one_line_and_the_main_job_discards_it(interrupted, key,  # noqa: F811
                                                                                   capsys):
    spec, results, state = interrupted
    saved = json.loads((state / "state.json").read_text())
    (state / "state.json").write_text(json.dumps({**saved, key: WRONG_TYPES[key]}))
    capsys.readouterr()
    code = script("train").main([str(spec.path), "--results-dir", str(results)])
    one_line_exit_2(code, capsys, "--restart", key)
    [record] = run_experiments([spec], results)
    assert "discarding it and starting afresh" in capsys.readouterr().out and record["metrics"]["epochs"] == 2
