"""Keras 3's three backends: the verifier's tests on JAX and PyTorch, the cross-backend experiment, and the
scripts' --backend.

Keras fixes its backend when it is imported, so another backend runs in a child process: the tests marked
any_backend run again there, the whole of them, as a user of that backend would run them."""
import json
import os
import sys

import keras
import numpy as np
import pytest
from conftest import REPO_ROOT, run_child, tiny_spec

from backprop_suite.worked_examples.cross_backend import KNOWN_DIFFERENCES, compare_backends, cross_backend_agreement
from gradcheck import autodiff

SCRIPTS = REPO_ROOT / "scripts"
OTHER_BACKENDS = [b for b in autodiff.BACKENDS if b != autodiff.BACKEND]


def child_env(**changes) -> dict:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "BACKPROP_SUITE_OFFLINE": "1", **changes}


# The whole of them on JAX took 790 s and on PyTorch 110 s in a CI run on 2 cores: the limits are for a hang.
CHILD_LIMIT_S = {"jax": 3600, "torch": 1800}


@pytest.mark.full
@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_the_verifier_tests_pass_on(backend):
    """Every test marked any_backend (the zoo, the registry models, the kink handling, each mutation of a manual
    formula) on `backend`, with its own autodiff as the reference; those also marked slow run with
    `KERAS_BACKEND=... pytest -m slow` (the architectures at their initial weights)."""
    done = run_child([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--all",
                      "-m", "any_backend and not slow", "-W", "ignore::UserWarning", str(REPO_ROOT / "tests")],
                     capture_output=True, text=True, timeout=CHILD_LIMIT_S[backend], cwd=REPO_ROOT,
                     env=child_env(KERAS_BACKEND=backend))
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-2000:]
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in summary and "failed" not in summary and "error" not in summary, summary


@pytest.mark.any_backend
def test_float64_stays_float64_on_this_backend():
    """Keras 3.15 maps float64 to float32 in its type promotion on JAX and PyTorch, so ops.mean of float64 values
    summed in float32 there (and JAX keeps no float64 without x64). The checks switch float64 on; NumPy's float64
    mean is the independent value, and 0.1 + 0.2 differs from float32's by 1e-8."""
    autodiff.enable_float64()
    values = np.array([0.1, 0.2, 1e-9], np.float64)
    mean = keras.ops.mean(keras.ops.convert_to_tensor(values, "float64"))
    assert keras.backend.standardize_dtype(mean.dtype) == "float64"
    assert float(keras.ops.convert_to_numpy(mean)) == float(np.mean(values))


@pytest.mark.full  # every backend in child processes (20-45 s)
def test_every_backend_gives_tensorflows_gradients_but_where_keras_computes_another_forward():
    report = cross_backend_agreement(models=("two_layer_net", "pooling_and_reshaping"), batch_size=2)
    rows = {(r["model"], r["backend"]): r for r in report.details["rows"]}
    assert set(rows) == {(m, b) for m in ("two_layer_net", "pooling_and_reshaping") for b in autodiff.BACKENDS}
    for key, row in rows.items():
        if key in KNOWN_DIFFERENCES:
            continue
        assert row["loss"] <= 1e-12 and row["autodiff"] <= 1e-12, row  # rounding only (module docstring)
        assert row["manual"] is not None and row["manual"] <= 1e-12, row
    # The comparison can fail: PyTorch's Keras averages 'same'-padded edge windows differently (keras#18452).
    torch_pooling = rows["pooling_and_reshaping", "torch"]
    assert torch_pooling["loss"] > 1e-4 and torch_pooling["autodiff"] > 1e-2
    assert report.metrics["pooling_and_reshaping_on_torch_loss_difference"] == torch_pooling["loss"]
    assert report.metrics["worst_autodiff_difference"] <= 1e-12
    assert "keras-team/keras#18452" in report.text


def test_a_gradient_zero_by_symmetry_is_rounding_noise_not_a_difference_but_a_small_tensors_error_still_is():
    """Differences are relative to the model's largest gradient. An attention's key bias has a gradient of exactly 0
    (the softmax ignores a shift shared by a row of scores): two correct backends leave noise of ±1e-17 there, which
    relative to itself differs by 2, and the Transformer's check read 0.6 to 1.9. A small tensor that is wrong by
    half its size still shows: 1e-3 off in a model whose largest gradient is 1."""
    def result(key_bias, small):
        return {"model": {"loss": 1.0, "tape": {"kernel": np.array([1.0, -0.5]), "key_bias": np.array([key_bias]),
                                                "small": np.array([small])}, "manual_missing": []}}
    tensorflow, noise_the_other_way = result(1e-17, 2e-3), result(-1e-17, 2e-3)
    [_, row] = compare_backends({"tensorflow": tensorflow, "jax": noise_the_other_way}, ["model"])
    assert row["autodiff"] == pytest.approx(2e-17)
    [_, row] = compare_backends({"tensorflow": tensorflow, "jax": result(1e-17, 1e-3)}, ["model"])
    assert row["autodiff"] == pytest.approx(1e-3)


@pytest.mark.full  # every backend in child processes (20-45 s)
@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_train_py_on_another_backend_is_a_variation_recorded_as_such(tmp_path, backend):
    spec = tiny_spec(tmp_path, epochs=1, batch_size=128)
    done = run_child([sys.executable, str(SCRIPTS / "train.py"), str(spec.path), "--backend", backend,
                      "--results-dir", str(tmp_path / "results")], capture_output=True, text=True, timeout=600,
                     cwd=tmp_path, env=child_env())
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "results" / f"tiny+backend={backend}" / "metrics.json").read_text())
    assert record["environment"]["keras_backend"] == backend and record["spec"]["backend"] == backend
    assert record["spec"]["overrides"] == {"backend": backend} and record["verdict"].startswith("measured only")
    assert record["metrics"]["test_accuracy"] > 0.5  # learnt (chance is 0.1)
    assert not (tmp_path / "results" / "tiny").exists()  # the spec's own results are TensorFlow's


def test_check_gradients_on_jax_uses_jax_autodiff_and_keeps_the_reference_results(tmp_path):
    done = run_child([sys.executable, str(SCRIPTS / "check_gradients.py"), "--model", "net_222", "--backend",
                      "jax", "--results-dir", str(tmp_path)], capture_output=True, text=True, timeout=600,
                     cwd=tmp_path, env=child_env())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "on jax (tape: jax.value_and_grad)" in done.stdout and "verdict: PASS" in done.stdout
    report = json.loads((tmp_path / "net_222+backend=jax" / "gradcheck.json").read_text())
    assert report["backend"] == "jax" and report["environment"]["keras_backend"] == "jax"
    assert not (tmp_path / "net_222").exists()


@pytest.mark.parametrize("script, args, env, named", [
    ("check_gradients.py", ["--model", "net_222"], {"KERAS_BACKEND": "mxnet"}, "KERAS_BACKEND='mxnet'"),
    ("check_gradients.py", ["--model", "net_222", "--backend", "mxnet"], {}, "--backend"),
    ("train.py", ["c003_1_mnist_cnn_quick", "--backend", "jax", "--strategy", "mirrored"], {}, "--strategy mirrored"),
    ("reproduce.py", ["--only", "c000_1_net_222_identity"], {"KERAS_BACKEND": "jax"}, "KERAS_BACKEND=jax"),
])
def test_a_backend_the_script_cannot_use_is_one_line_exit_2(tmp_path, script, args, env, named):
    done = run_child([sys.executable, str(SCRIPTS / script), *args, "--results-dir", str(tmp_path / "out")],
                     capture_output=True, text=True, timeout=300, cwd=tmp_path,
                     env={**child_env(), "KERAS_BACKEND": "tensorflow", **env})
    assert done.returncode == 2, done.stderr[-1500:]
    assert "Traceback" not in done.stderr
    assert named in done.stderr.strip().splitlines()[-1], done.stderr[-500:]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.full  # every backend in child processes (20-45 s)
def test_the_bench_times_the_suites_training_path_on_every_backend_in_the_same_rounds():
    from backprop_suite import bench

    x, y, _ = bench.training_data()
    configs = ["train_py", "train_py_jax", "train_py_torch"]
    measured = bench.throughput(configs, [128], 2, x[:640], y[:640], progress=lambda line: None)
    rounds = measured[128]["samples_per_second"]
    assert set(rounds) == set(configs) and all(len(v) == 2 and min(v) > 0 for v in rounds.values())


@pytest.mark.full  # every backend in child processes (20-45 s)
def test_one_spec_trained_on_two_backends_gives_each_runs_metrics_and_curves_side_by_side(tmp_path):
    from backprop_suite.worked_examples.cross_backend_training import cross_backend_training

    spec = tiny_spec(tmp_path, epochs=2, batch_size=128)
    result = cross_backend_training(str(spec.path), backends=("tensorflow", "torch"))
    assert result.metrics["tensorflow_test_accuracy"] > 0.5 and result.metrics["torch_test_accuracy"] > 0.5
    assert result.metrics["min_test_accuracy"] == min(result.metrics["tensorflow_test_accuracy"],
                                                     result.metrics["torch_test_accuracy"])
    result.figures["curves_by_backend.png"](tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    assert result.data["name"] == "mnist-5k"
