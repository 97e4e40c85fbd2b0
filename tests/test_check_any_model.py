"""The verifier on models the suite does not know: the zoo, a user's custom layer, a saved .keras file."""
import importlib.util
import json
import sys

import keras
import numpy as np
import pytest
from conftest import REPO_ROOT, run_child, sine_layer_source, tiered

from backprop_suite.check_gradients import gradient_batch
from backprop_suite.models import MODEL_BUILDERS, build_model
from backprop_suite.models.zoo import ZOO
from backprop_suite.worked_examples.cross_backend import KNOWN_DIFFERENCES
from gradcheck import GradientReport, assert_gradients, autodiff, check_gradients
from gradcheck.check import random_batch
from gradcheck.dtypes import with_dtype
from gradcheck.errors import InputError
from gradcheck.manual import layers as manual
from gradcheck.methods import dropout_masks_for
from gradcheck.parameters import parameters
from gradcheck.reference import reference_outputs

SCRIPT = str(REPO_ROOT / "scripts" / "check_gradients.py")


def zoo_batch(name, entry, model):
    if name == "subclassed_mlp":  # no symbolic inputs to read a shape from
        rng = np.random.default_rng(0)
        return rng.standard_normal((8, 8)), np.eye(4)[rng.integers(0, 4, 8)]
    return random_batch(model, 8, entry.loss)


@pytest.mark.any_backend
@pytest.mark.parametrize("name", tiered(ZOO, everyday=("simple_conv_net", "resnet_block", "subclassed_mlp",
                                                         "two_inputs_two_outputs")))
def test_every_zoo_model_passes_the_full_check(name):
    keras.utils.set_random_seed(0)
    entry = ZOO[name]
    model = entry.build()
    x, y = zoo_batch(name, entry, model)
    report = check_gradients(model, x, y, loss=entry.loss, training=entry.training)
    assert report.passed, str(report)
    known_difference = (name, autodiff.BACKEND) in KNOWN_DIFFERENCES  # Keras computes another forward there
    assert report.data["three_way"]["manual"]["available"] == (entry.manual and not known_difference)
    if known_difference:
        assert "keras-team/keras#18452" in str(report)
    comparisons = report.data["three_way"]["comparisons"]
    methods = {c["methods"] for c in comparisons}
    assert ("manual_vs_tape" in methods) == (entry.manual and not known_difference)
    layers = report.data["layers"]
    assert layers["available"] == (name != "subclassed_mlp")  # a subclassed model has no graph to follow
    checked = [row for row in layers["calls"] if row["checked"]]
    assert all("tape_vs_finite_differences" in row["methods"] for row in checked)
    assert all("jvp_vs_tape" in row["methods"] or "forward_mode" in row for row in checked)  # else named why not
    by_the_whole_model = {c["tensor"] for c in comparisons if c["methods"] == "tape_vs_finite_differences"}
    assert by_the_whole_model | set(layers["covered"]) == set(parameters(model))  # every tensor, by one or the other
    assert not report.data["directional"]["below_float64"]
    assert report.data["directional"]["parameters"] == model.count_params() - sum(
        int(np.prod(v.shape)) for v in model.non_trainable_weights)


_namespace: dict = {}
exec(sine_layer_source("test_check_any_model"), _namespace)  # noqa: S102  (the layer a user would write)
Sine = _namespace["Sine"]


def model_with_sine(broken: bool) -> keras.Model:
    return keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, name="before"), Sine(broken, name="sine"),
                             keras.layers.Dense(3, activation="softmax", name="after")], name="with_sine")


@pytest.mark.any_backend
def test_a_layer_without_a_formula_is_named_and_the_model_still_checked():
    model = model_with_sine(broken=False)
    report = check_gradients(model, *random_batch(model, 4))
    assert report.passed
    assert "manual: not available — Sine (sine: no manual formula for this layer class)" in str(report)


@pytest.mark.any_backend
def test_assert_gradients_names_the_failing_layer_then_the_worst_tensor_entry_both_values_and_the_tolerance():
    model = model_with_sine(broken=True)
    x, y = random_batch(model, 4)
    with pytest.raises(AssertionError) as raised:
        assert_gradients(model, x, y, fd_entries=32)  # the whole model's entries too, as before layer by layer
    message = str(raised.value)
    report = check_gradients(model, x, y, fd_entries=32)
    assert message.startswith(f"{model.name}: gradient check FAILED; first failing layer: layer sine (Sine): its "
                              "gradient with respect to its input 0 disagrees with finite differences of its forward")
    assert [row["layer"] for row in report.failing_layers()] == ["sine"]
    worst = report.failures()[0]
    assert worst["tensor"].startswith("before/")  # upstream of the broken layer; `after` is still right
    assert worst["tensor"] in message and str(tuple(worst["worst_entry"])) in message
    assert repr(worst["worst_values"][0]) in message and repr(worst["worst_values"][1]) in message
    assert f"{worst['worst_tolerance']:.3g}" in message
    assert not any(c["tensor"].startswith("after/") for c in report.failures())


@pytest.mark.any_backend
def test_a_formula_that_raises_fails_the_manual_method_naming_its_layer_and_the_others_still_run(monkeypatch):
    """An exception inside a hand-derived backward is the formula's bug: a FAIL naming the layer and the step, never a
    traceback out of the check, and tape, finite differences and forward mode are still compared."""
    def broken(self, dout):
        raise ValueError("a shape this formula does not handle")

    monkeypatch.setattr(manual.Softmax, "backward", broken)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="scores"),
                              keras.layers.Softmax(name="probabilities")], name="with_softmax_layer")
    x, y = np.random.default_rng(0).standard_normal((4, 4)), np.random.default_rng(1).standard_normal((4, 3))
    report = check_gradients(model, x, y, loss="mean_squared_error")  # not fused: the Softmax backward runs
    assert not report.passed
    message = report.failure_message()
    assert "probabilities (Softmax): the formula Softmax.backward raised ValueError: a shape this formula" in message
    assert "manual: FAILED" in str(report)
    rows = {row["layer"]: row for row in report.data["layers"]["calls"]}
    assert [name for name, row in rows.items() if not row["passed"]] == ["probabilities"]
    assert rows["probabilities"]["manual"].startswith("FAILED: probabilities (Softmax): the formula Softmax.backward")
    assert {c["methods"] for c in rows["probabilities"]["comparisons"]} == {"tape_vs_finite_differences",
                                                                            "jvp_vs_tape"}
    assert all(c["passed"] for c in rows["probabilities"]["comparisons"])  # tape, FD and forward mode still agree
    assert report.data["three_way"]["comparisons"] == []  # no manual gradient; every tensor's FD ran in its layer
    assert report.data["directional"]["checks"]["jvp_vs_tape"]["passed"]


@pytest.mark.any_backend
@pytest.mark.parametrize("model_dtype", ["float32", "float64"])  # float64: no copy, the model itself is checked
@pytest.mark.parametrize("name", ["resnet_block", "noisy_cnn"])  # moving statistics; dropout and noise seed states
def test_the_check_never_changes_the_model_its_moving_statistics_or_seed_state(name, model_dtype):
    model = ZOO[name].build() if name in ZOO else noisy_cnn([keras.layers.Dropout(0.3),
                                                             keras.layers.GaussianNoise(0.5)])
    model = with_dtype(model, model_dtype)
    before = [w.copy() for w in model.get_weights()] + [keras.ops.convert_to_numpy(v.value) for v in model.variables]
    x, y = random_batch(model, 4)
    assert check_gradients(model, x, y, training=True, fd_entries=4, directions=2).passed
    after = [w.copy() for w in model.get_weights()] + [keras.ops.convert_to_numpy(v.value) for v in model.variables]
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))


@pytest.mark.any_backend
@pytest.mark.full  # 6-12 s each
@pytest.mark.parametrize("seed", [0, 1, 16, 31])
def test_kinks_are_found_without_looking_inside_the_model(seed):
    """At Keras's zero biases, blank 3×3 patches of digits put conv pre-activations exactly on ReLU's kink: the
    generic check flags those finite-difference entries as kinks instead of failing them. The seeds are ones where
    the earlier kink test failed a correct model along a random direction (TensorFlow's draws 0 and 1, PyTorch's 16
    and 31): one-sided slopes steady from h down to h/100 and apart by 2.5e-7 to 1.2e-5, less than the tolerance
    then asked of a jump (1e-5 + 1e-3·|slope|), while the tape's subgradient lay 2e-4 to 6e-4 from both."""
    keras.utils.set_random_seed(seed)
    model = build_model("mnist_cnn")  # zero biases
    x, t, masks, _ = gradient_batch(model, 4, np.random.default_rng(0))
    report = check_gradients(model, x, t, dropout_masks=masks, fd_entries=16)
    assert report.passed, report.failure_message()
    assert sum(c["kinks"] for c in report.data["three_way"]["comparisons"]
               if c["methods"] == "tape_vs_finite_differences") > 0


def test_the_report_prints_saves_and_reloads(tmp_path):
    model = ZOO["strided_cnn_gap"].build()
    report = check_gradients(model, *random_batch(model, 4), fd_entries=4, directions=2)
    json_path, png_path = report.save(tmp_path / "out")
    assert json.loads(json_path.read_text())["passed"] is True and png_path.stat().st_size > 0
    assert "conv3/kernel" in str(report) and "verdict: PASS" in str(report)
    assert GradientReport(json.loads(report.to_json())).passed


def run(args, cwd=None):
    return run_child([sys.executable, SCRIPT, *args], capture_output=True, text=True, cwd=cwd, timeout=600)


USER_SCRIPT = """
import keras, numpy as np
from mylayers import Sine
model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, activation="tanh"), Sine(BROKEN),
                          keras.layers.Dense(3, activation="softmax")])
model.compile(loss="categorical_crossentropy", optimizer="adam")
model.save("user_model.keras")
"""
@pytest.mark.full  # 10-25 s
@pytest.mark.parametrize("broken, exit_code, verdict", [(False, 0, True), (True, 1, False)])
def test_cli_checks_a_model_saved_by_a_users_own_script(tmp_path, broken, exit_code, verdict):
    (tmp_path / "mylayers.py").write_text(sine_layer_source("mylayers"))
    (tmp_path / "save_model.py").write_text(USER_SCRIPT.replace("BROKEN", str(broken)))
    run_child([sys.executable, "save_model.py"], cwd=tmp_path, check=True, capture_output=True, timeout=300)
    done = run(["--model", "user_model.keras", "--import", "mylayers", "--out", "checked"], cwd=tmp_path)
    assert done.returncode == exit_code, done.stderr[-2000:]
    report = json.loads((tmp_path / "checked" / "gradcheck.json").read_text())
    assert report["passed"] is verdict and (tmp_path / "checked" / "gradcheck.png").is_file()
    assert "manual: not available — Sine" in done.stdout
    assert report["three_way"]["losses"] == ["categorical_crossentropy"]  # the model's compiled loss


@pytest.mark.full  # 5-10 s
def test_cli_takes_a_function_and_an_npz(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "batch.npz", x=rng.standard_normal((3, 15, 15, 1)), y=np.eye(10)[[1, 4, 7]])
    done = run(["--model", "backprop_suite.models.zoo:strided_cnn_gap", "--data", str(tmp_path / "batch.npz"), "--out",
                str(tmp_path / "out"), "--fd-entries", "4", "--directions", "2"], cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((tmp_path / "out" / "gradcheck.json").read_text())["batch"]["size"] == 3


@pytest.mark.parametrize("args, named", [
    (["--model", "net_222", "--batch-size", "0"], "--batch-size"),
    (["--model", "net_222", "--fd-entries", "-1"], "--fd-entries"),
    (["--model", "net_222", "--directions", "0"], "--directions"),
    (["--model", "net_222", "--seed", "4294967296"], "--seed"),
    (["--model", "nowhere.keras", "--out", "x"], "nowhere.keras"),
    (["--model", "backprop_suite.models.zoo:strided_cnn_gap"], "--out"),
    (["--model", "no_such_model"], "--model"),
    (["--model", "net_222", "--data", "missing.npz"], "--data"),
])
def test_cli_refuses_bad_arguments_in_one_line_before_anything_is_written(args, named, tmp_path):
    committed = REPO_ROOT / "results" / "net_222" / "gradcheck.json"
    before = committed.read_bytes() if committed.exists() else None
    done = run(args, cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert named in lines[-1] and "Traceback" not in done.stderr
    assert (committed.read_bytes() if committed.exists() else None) == before
    assert list(tmp_path.iterdir()) == []


def test_cli_registry_names_are_the_registry():
    """The script lists the registry's names itself, so that --help and bad arguments answer before Keras loads."""
    spec = importlib.util.spec_from_file_location("check_gradients_script", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert set(script.REGISTRY) == set(MODEL_BUILDERS)


@pytest.mark.any_backend
def test_integer_labels_and_a_from_logits_loss_are_checked_with_the_manual_formulas():
    """A logits model (linear last layer) with integer class labels and SparseCategoricalCrossentropy(from_logits=
    True), as Keras users write it: the fused softmax-cross-entropy backward applies, and the loss checked is
    −mean log softmax(u)[y], worked out here with NumPy."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, activation="tanh"), keras.layers.Dense(3)])
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((4, 6)), np.array([0, 2, 1, 2])
    report = check_gradients(model, x, y, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert report.passed, str(report)
    assert report.data["three_way"]["manual"]["available"]
    hidden = np.tanh(x @ model.layers[0].kernel.numpy() + model.layers[0].bias.numpy())
    logits = hidden @ model.layers[1].kernel.numpy() + model.layers[1].bias.numpy()
    softmax = np.exp(logits - logits.max(axis=1, keepdims=True))
    softmax /= softmax.sum(axis=1, keepdims=True)
    loss = -np.mean(np.log(softmax[np.arange(4), y]))
    assert report.data["three_way"]["tape_loss"] == pytest.approx(loss, rel=1e-6)  # float32 weights, float64 math


def noisy_cnn(noise_layers) -> keras.Sequential:
    return keras.Sequential([keras.Input((8, 8, 2)), keras.layers.Conv2D(4, 3, activation="tanh", name="conv"),
                             *noise_layers, keras.layers.Flatten(name="flatten"),
                             keras.layers.Dense(3, activation="softmax", name="head")], name="noisy_cnn")


@pytest.mark.any_backend
def test_noise_layers_without_a_formula_keep_one_draw_for_every_method():
    """In training mode, a noise layer the check has no mask for (SpatialDropout2D drops whole channels, so it is no
    elementwise Dropout) runs its own seeded noise. The tape and finite differences must differentiate the same
    draw: when each float64 copy of the model drew its own, they disagreed and a correct model failed."""
    keras.utils.set_random_seed(0)
    model = noisy_cnn([keras.layers.SpatialDropout2D(0.3, name="spatial"),
                       keras.layers.GaussianNoise(0.5, name="noise")])
    x, y = random_batch(model, 6)
    training = check_gradients(model, x, y, training=True, fd_entries=8, directions=2)
    assert training.passed, str(training)
    assert training.data["dropout_masks"] == []  # no elementwise mask stands in for SpatialDropout2D
    inference = check_gradients(model, x, y, fd_entries=1, directions=1)
    noise_on = training.data["three_way"]["tape_loss"] != pytest.approx(inference.data["three_way"]["tape_loss"])
    assert noise_on


@pytest.mark.any_backend
def test_a_dropout_noise_shape_shares_the_drawn_mask_and_the_formulas_still_agree():
    keras.utils.set_random_seed(0)
    model = noisy_cnn([keras.layers.Dropout(0.5, noise_shape=(None, 1, 1, 4), name="channel_dropout")])
    x, y = random_batch(model, 6)
    report = check_gradients(model, x, y, training=True)
    assert report.passed, str(report)
    assert report.data["three_way"]["manual"]["available"]
    masks = dropout_masks_for(model, x, True, None, seed=0)
    assert masks["channel_dropout"].shape == (6, 1, 1, 4)

















class TanhInFloat32(keras.layers.Layer):
    """tanh computed in float32 inside a float64 model, as Keras's JAX attention computes its softmax."""

    def call(self, x):
        return keras.ops.cast(keras.ops.tanh(keras.ops.cast(x, "float32")), x.dtype)


@pytest.mark.any_backend
def test_a_model_computing_partly_in_float32_fails_with_the_reason_and_no_noise_passes_for_a_kink():
    """Finite differences of a loss with float32 rounding inside see noise of ~1e-7·|L|/h; its one-sided slopes
    jump about at every step, which must not be credited as kinks (when they were, some tensors passed). Forward
    and reverse mode disagree beyond float64 rounding, and the report says what that means."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,), dtype="float64"), keras.layers.Dense(5, dtype="float64", name="first"),
                              TanhInFloat32(dtype="float64", name="tanh32"),
                              keras.layers.Dense(3, activation="softmax", dtype="float64", name="head")])
    x, y = random_batch(model, 4)
    report = check_gradients(model, x, y, fd_entries=32)  # the whole model's entries too
    assert not report.passed
    fd = [c for c in report.data["three_way"]["comparisons"] if c["methods"] == "tape_vs_finite_differences"]
    assert sum(c["kinks"] for c in fd) == 0
    assert not next(c for c in fd if c["tensor"] == "first/kernel")["passed"]
    assert [row["layer"] for row in report.failing_layers()] == ["tanh32"]  # layer by layer: the culprit, alone
    assert report.failing_layers()[0]["kinks"] == 0
    if report.data["directional"]["forward_mode"]["available"]:
        assert report.data["directional"]["below_float64"]
        assert "part of the model most likely computes below float64" in str(report)


@pytest.mark.full  # 10-25 s
@pytest.mark.any_backend
def test_layers_wrapping_another_are_copied_to_float64_with_it():
    """Bidirectional and TimeDistributed carry their inner layer's config, dtype included: copied with the outer
    dtype only, the inner GRU and Dense stayed float32, and finite differences failed correct gradients."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5, 3)), keras.layers.TimeDistributed(keras.layers.Dense(4), name="each"),
                              keras.layers.Bidirectional(keras.layers.GRU(3), name="both_ways"),
                              keras.layers.Dense(2, activation="softmax", name="head")], name="wrapped")
    copy = with_dtype(model, "float64")
    assert {layer.compute_dtype for layer in copy._flatten_layers(include_self=False)
            if not isinstance(layer, keras.layers.InputLayer)} == {"float64"}
    report = check_gradients(model, *random_batch(model, 4), fd_entries=8, directions=2)
    assert report.passed, str(report)


@pytest.mark.parametrize("call", ["positional", "keywords"])
def test_attention_gets_its_formula_however_query_value_and_key_are_passed(call):
    """Keras flattens a call's tensors positional first, then keywords in sorted order (key, query, value), and the
    twin passes them in that order: the formula must take each as its role. Three inputs make every role a tensor
    of its own; a self-attention reads one tensor in two roles."""
    keras.utils.set_random_seed(0)
    query, value, key = keras.Input((4, 5)), keras.Input((3, 6)), keras.Input((3, 7))
    cross, self_attention = keras.layers.MultiHeadAttention(2, 3), keras.layers.MultiHeadAttention(2, 3)
    if call == "positional":
        attended = self_attention(cross(query, value, key), cross(query, value, key))
    else:
        attended = self_attention(query=cross(key=key, query=query, value=value),
                                  value=cross(value=value, key=key, query=query))
    pooled = keras.layers.GlobalAveragePooling1D()(attended)
    model = keras.Model([query, value, key], keras.layers.Dense(3, activation="softmax")(pooled))
    report = check_gradients(model, *random_batch(model, 4), fd_entries=8, directions=2)
    assert report.data["three_way"]["manual"]["available"], report.data["three_way"]["manual"]
    assert report.passed, str(report)


@pytest.mark.any_backend
def test_attention_whose_softmax_jax_computes_in_float32_is_named_in_the_report():
    """On JAX, MultiHeadAttention without dropout calls jax.nn.dot_product_attention, whose softmax runs in float32
    even in a float64 model, and the float64 check fails by that rounding alone (measured): the report names the
    layer and what to do. TensorFlow and PyTorch compute it in float64, and the same model passes there."""
    keras.utils.set_random_seed(0)
    tokens = keras.Input((6,), dtype="int32")
    x = keras.layers.Embedding(20, 8)(tokens)
    x = keras.layers.MultiHeadAttention(2, 4, name="attention")(x, x)
    model = keras.Model(tokens, keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling1D()(x)))
    report = check_gradients(model, *random_batch(model, 8))
    if autodiff.BACKEND == "jax":
        assert not report.passed and report.data["below_float64"] == [
            "attention (MultiHeadAttention without dropout: jax.nn.dot_product_attention's float32 softmax)"]
        assert "float32 inside: on jax" in str(report) and "dropout above 0" in str(report)
    else:
        assert report.passed and report.data["below_float64"] == [] and "float32 inside" not in str(report)


@pytest.mark.any_backend
def test_a_lambda_layer_is_copied_to_float64_with_its_own_function():
    """Keras refuses to rebuild a Lambda from its config (serialised code is unsafe to load), so the float64 copy
    failed for any model with one; the copy now takes the live function, and the check's loss is Keras's."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="tanh"),
                              keras.layers.Lambda(lambda t: t * t + 1.0, name="square_plus_one"),
                              keras.layers.Dense(3, activation="softmax")], name="with_a_lambda")
    model.compile(loss="categorical_crossentropy")
    x, y = random_batch(model, 6)
    report = check_gradients(model, x, y, fd_entries=8, directions=2)
    assert report.passed, str(report)
    assert report.data["three_way"]["tape_loss"] == pytest.approx(model.evaluate(x, y, verbose=0), rel=1e-6)
    assert "Lambda (square_plus_one: no manual formula for this layer class)" in str(report)


@pytest.mark.any_backend
def test_a_one_filter_convolution_is_checked_or_pytorchs_defect_named_in_one_line():
    """PyTorch's float64 CPU convolution backward refuses a one-filter Conv2D under Keras (RuntimeError: slow_conv2d:
    grad_weight must be contiguous): a traceback would blame the user's model, so the check names PyTorch and the
    backends where the same check runs. TensorFlow and JAX check the model."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(1, 3, activation="sigmoid", name="mask")],
                             name="one_filter")
    x, y = random_batch(model, 4)
    if autodiff.BACKEND != "torch":
        assert check_gradients(model, x, y, fd_entries=8, directions=2).passed
        return
    with pytest.raises(InputError, match=r"torch.autograd.grad cannot differentiate this model: slow_conv2d: "
                                         r"grad_weight must be contiguous\. .*KERAS_BACKEND=tensorflow or jax"):
        check_gradients(model, x, y, fd_entries=8, directions=2)


@pytest.mark.any_backend
def test_every_activation_with_a_formula_agrees_with_each_backends_autodiff():
    """Each activation the formulas know, in one MLP, on this backend: manual vs the backend's autodiff and central
    differences (the zoo has no GELU: TensorFlow's casts 1/√2 through float32, so backends' losses differ by 4e-9)."""
    from gradcheck.manual.layers import ACTIVATIONS
    keras.utils.set_random_seed(0)
    below = {"torch": ("hard_sigmoid",)}.get(autodiff.BACKEND, ())  # the test below: a gradient off by 3e-8
    stack = [keras.layers.Dense(6, activation=name, name=name) for name in ACTIVATIONS
             if name != "softmax" and name not in below]
    model = keras.Sequential([keras.Input((5,)), *stack, keras.layers.Dense(3, activation="softmax")], name="all")
    report = check_gradients(model, *random_batch(model, 6), fd_entries=8, directions=2)
    assert report.passed, str(report)
    assert report.data["three_way"]["manual"]["available"], str(report)


@pytest.mark.any_backend
def test_pytorchs_hard_sigmoid_gradient_rounds_one_sixth_through_float32_and_the_formula_does_not():
    """Measured: PyTorch's hardsigmoid backward multiplies by 1.0f/6.0f even in float64 (0.1666666716…), so its
    gradient is off by 3e-8 relative and a float64 check of a model with hard_sigmoid fails there, truly; the
    forward, and TensorFlow's and JAX's gradients, use 1/6. The formula's is 1/6 on every backend."""
    from gradcheck.manual.layers import HardSigmoid
    autodiff.enable_float64()
    x = {"x": keras.ops.convert_to_tensor(np.array([1.0, -1.0]))}
    _, tape = autodiff.value_and_gradients(lambda v: keras.ops.sum(keras.activations.hard_sigmoid(v["x"])), x)
    step = HardSigmoid()
    step.forward(x["x"])
    manual = keras.ops.convert_to_numpy(step.backward(keras.ops.ones((2,), "float64")))
    assert manual.tolist() == [1 / 6, 1 / 6]
    expected = float(np.float32(1) / np.float32(6)) if autodiff.BACKEND == "torch" else 1 / 6
    assert keras.ops.convert_to_numpy(tape["x"]).tolist() == [expected, expected]


@pytest.mark.any_backend
def test_an_adapted_normalization_is_copied_with_its_statistics_and_its_formula_agrees():
    """keras-io's regression tutorials start with a Normalization adapted to the data: its mean and variance are
    computed from its variables when Keras loads them, so the float64 copy kept its build's 0 and 1 (on TensorFlow
    and JAX), and the check differentiated another function than the model's (loss 1.01 against evaluate's 0.98)."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    normalize = keras.layers.Normalization(name="normalize")
    normalize.adapt(rng.normal(3.0, 2.0, (50, 4)))
    model = keras.Sequential([keras.Input((4,)), normalize, keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(1)], name="regression")
    model.compile(loss="mean_squared_error")
    x, y = random_batch(model, 6)
    report = check_gradients(model, x, y, fd_entries=8, directions=2)
    assert report.passed, str(report)
    assert report.data["three_way"]["tape_loss"] == pytest.approx(model.evaluate(x, y, verbose=0), rel=1e-6)
    assert report.data["three_way"]["manual"]["available"], str(report)


def data_loss(model, x, y) -> float:
    """The categorical cross-entropy of the model's predictions alone, by Keras's loss: no penalties."""
    per_sample = keras.losses.categorical_crossentropy(y, model.predict(x, verbose=0))
    return float(keras.ops.convert_to_numpy(per_sample).mean())


@pytest.mark.any_backend
def test_the_checked_loss_is_the_one_fit_minimises_penalties_included_and_their_formulas_agree():
    """Weight decay (L2, L1L2) and an activity penalty are in model.losses, which fit adds to the data loss: the check
    takes Keras's evaluate value, well above the cross-entropy alone, and the manual twin adds every penalty's
    gradient (the penalty mutations in test_mutations.py break each)."""
    keras.utils.set_random_seed(0)
    model = ZOO["regularized_mlp"].build()
    model.compile(loss="categorical_crossentropy")
    x, y = random_batch(model, 6)
    report = check_gradients(model, x, y)
    assert report.passed, str(report)
    three_way = report.data["three_way"]
    keras_loss = model.evaluate(x, y, verbose=0)
    assert keras_loss - data_loss(model, x, y) > 0.05  # the penalties weigh: a check of the data loss alone fails
    assert three_way["tape_loss"] == pytest.approx(keras_loss, rel=1e-6)  # float32 evaluate
    assert three_way["manual_loss"] == pytest.approx(three_way["tape_loss"], rel=1e-14)
    assert "+ model.losses (dense1/kernel L2, dense2/kernel L1L2, head/kernel L2, head/bias L2, dense2 activity L1)" \
        in str(report)


@pytest.mark.any_backend
def test_a_layer_called_twice_adds_its_activity_penalty_once_per_call():
    keras.utils.set_random_seed(0)
    shared = keras.layers.Dense(4, activation="tanh", activity_regularizer=keras.regularizers.L2(0.1), name="shared")
    left, right = keras.Input((3,), name="left"), keras.Input((3,), name="right")
    joined = keras.layers.Concatenate(name="join")([shared(left), shared(right)])
    model = keras.Model([left, right], keras.layers.Dense(2, activation="softmax", name="head")(joined))
    model.compile(loss="categorical_crossentropy")
    rng = np.random.default_rng(0)
    x, y = [rng.standard_normal((5, 3)), rng.standard_normal((5, 3))], np.eye(2)[rng.integers(0, 2, 5)]
    report = check_gradients(model, x, y)
    assert report.passed, str(report)
    assert report.data["three_way"]["manual"]["available"]
    data = data_loss(model, x, y)
    model(x)  # an eager call: model.losses then holds both calls' penalties, on every backend
    assert len(model.losses) == 2
    eager = data + sum(float(keras.ops.convert_to_numpy(loss)) for loss in model.losses)
    assert report.data["three_way"]["tape_loss"] == pytest.approx(eager, rel=1e-6)
    if autodiff.BACKEND != "jax":  # Keras's JAX trainer keeps only the last call's (its stateless call clears the rest)
        assert report.data["three_way"]["tape_loss"] == pytest.approx(model.evaluate(x, y, verbose=0), rel=1e-6)


@keras.saving.register_keras_serializable(package="test_check_any_model")
class SparsityPenalty(keras.layers.Layer):
    """The identity, adding 0.1·mean|x| to the loss by add_loss, as a user's sparse autoencoder does."""

    def call(self, x):
        self.add_loss(0.1 * keras.ops.mean(keras.ops.abs(x)))
        return x


@keras.saving.register_keras_serializable(package="test_check_any_model")
class Smoothness(keras.regularizers.Regularizer):
    """A user's weight penalty: 0.1·Σ (w[i+1] − w[i])² along the kernel's rows."""

    def __call__(self, w):
        return 0.1 * keras.ops.sum(keras.ops.square(w[1:] - w[:-1]))

    def get_config(self):
        return {}


class SparseMLP(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(4, activation="tanh", kernel_regularizer=Smoothness(), name="hidden")
        self.sparsity, self.head = SparsityPenalty(name="sparsity"), keras.layers.Dense(3, activation="softmax")

    def call(self, x):
        return self.head(self.sparsity(self.hidden(x)))


@pytest.mark.any_backend
@pytest.mark.parametrize("kind", ["functional", "subclassed"])
def test_a_users_add_loss_and_regularizer_are_in_the_checked_loss_and_named_without_a_formula(kind):
    keras.utils.set_random_seed(0)
    if kind == "functional":
        inputs = keras.Input((5,))
        hidden = keras.layers.Dense(4, activation="tanh", kernel_regularizer=Smoothness(), name="hidden")(inputs)
        sparse = SparsityPenalty(name="sparsity")(hidden)
        model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(sparse))
    else:
        model = SparseMLP()
        model(np.zeros((1, 5)))
    model.compile(loss="categorical_crossentropy")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((6, 5)), np.eye(3)[rng.integers(0, 3, 6)]
    report = check_gradients(model, x, y)
    assert report.passed, str(report)  # tape against finite differences of the whole loss
    keras_loss = model.evaluate(x, y, verbose=0)
    assert keras_loss - data_loss(model, x, y) > 0.05
    assert report.data["three_way"]["tape_loss"] == pytest.approx(keras_loss, rel=1e-6)
    if kind == "functional":
        assert "Smoothness (on hidden/kernel: no manual formula for this regularizer)" in str(report)
        assert "SparsityPenalty (sparsity: no manual formula for this layer class)" in str(report)


def test_an_activity_penalty_on_a_fused_softmax_output_is_named_not_checked_wrongly():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(
        3, activation="softmax", activity_regularizer=keras.regularizers.L2(0.1), name="head")])
    report = check_gradients(model, *random_batch(model, 5))
    assert report.passed, str(report)
    assert "an activity regularizer on the softmax output it fuses with" in str(report)


def fine_tuned(base_trainable: bool, base_dropout: bool = False) -> keras.Model:
    """Fine-tuning as keras-io writes it: Rescaling, then a pretrained base Sequential called with training=False
    inside a Functional model, then a new head."""
    base = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
                             keras.layers.BatchNormalization(name="bn"),
                             keras.layers.GlobalAveragePooling2D(name="gap"),
                             *([keras.layers.Dropout(0.3, name="base_dropout")] if base_dropout else [])], name="base")
    base.trainable = base_trainable
    inputs = keras.Input((8, 8, 3))
    features = base(keras.layers.Rescaling(1 / 255, name="scale")(inputs), training=False)
    features = keras.layers.Dropout(0.2, name="head_dropout")(features)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="head")(features), name="fine_tuned")


@pytest.mark.any_backend
@pytest.mark.parametrize("base_trainable", [False, True])
def test_a_pretrained_base_model_inside_a_model_is_copied_to_float64_and_followed_by_the_formulas(base_trainable):
    """The copy's base took Keras's global float32 policy and computed in float32, so the check refused the model;
    and the manual formulas did not follow a model inside a model. Now both run, the formulas layer by layer
    through the base (BatchNormalization on batch statistics when the base is unfrozen: Keras's training=True of
    the outer call wins over the base's training=False)."""
    keras.utils.set_random_seed(0)
    model = fine_tuned(base_trainable)
    rng = np.random.default_rng(0)
    report = check_gradients(model, rng.uniform(0, 255, (6, 8, 8, 3)), np.eye(2)[rng.integers(0, 2, 6)],
                             training=True)
    assert report.passed, str(report)
    assert report.data["three_way"]["manual"]["available"]
    checked = [c["tensor"] for c in report.data["three_way"]["comparisons"] if c["methods"] == "manual_vs_tape"]
    assert len(checked) == (6 if base_trainable else 2)  # conv kernel, bias, γ, β of the base when unfrozen


@pytest.mark.any_backend
def test_the_outer_training_flag_reaches_a_base_called_with_training_false_as_in_keras():
    """What the formulas follow: Keras's own model(x, training=True) runs an unfrozen base's BatchNormalization on
    batch statistics though the base was called with training=False, and so does the checked function."""
    keras.utils.set_random_seed(0)
    model = fine_tuned(base_trainable=True)
    model.get_layer("head_dropout").rate = 0.0  # Keras's own call would draw a dropout mask; the check gets none
    bn = model.get_layer("base").get_layer("bn")
    bn.moving_mean.assign(np.full(4, 3.0))  # moving statistics far from the batch's, so the two modes differ
    bn.moving_variance.assign(np.full(4, 5.0))
    x = np.random.default_rng(0).uniform(0, 255, (6, 8, 8, 3)).astype("float32")
    checked = keras.ops.convert_to_numpy(reference_outputs(model, x, training=True)[0])
    np.testing.assert_allclose(checked, keras.ops.convert_to_numpy(model(x, training=True)), rtol=1e-6, atol=1e-7)
    assert np.abs(checked - keras.ops.convert_to_numpy(model(x, training=False))).max() > 0.1


def test_a_base_model_with_its_own_dropout_is_not_followed_in_training_mode():
    """Its Dropout draws Keras's own masks (a check's masks reach the outer model's Dropout only): no formula for the
    base rather than one for another function; tape and finite differences still check it."""
    keras.utils.set_random_seed(0)
    model = fine_tuned(base_trainable=True, base_dropout=True)
    rng = np.random.default_rng(0)
    report = check_gradients(model, rng.uniform(0, 255, (6, 8, 8, 3)), np.eye(2)[rng.integers(0, 2, 6)],
                             training=True)
    assert report.passed, str(report)
    assert "Sequential (base: no manual formula for this layer class)" in str(report)


@pytest.mark.full  # 5-10 s
def test_a_masking_layers_mask_is_followed_through_a_sequential_model():
    """Masking on padded series (steps of zeros, before or after each), then a backwards SimpleRNN that zeroes its
    masked outputs and an LSTM that keeps its state through them: all three methods agree."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((6, 3)), keras.layers.Masking(0.0, name="masking"),
        keras.layers.SimpleRNN(4, go_backwards=True, return_sequences=True, zero_output_for_mask=True, name="rnn"),
        keras.layers.LSTM(3, name="lstm"), keras.layers.Dense(2, activation="softmax", name="head")], name="series")
    x, y = random_batch(model, 6, seed=3)
    assert (x == 0).all(axis=-1).any()  # padded steps
    report = check_gradients(model, x, y, fd_entries=6)
    assert report.passed and {"manual_vs_tape", "manual_vs_finite_differences"} <= {
        c["methods"] for c in report.data["three_way"]["comparisons"]}


def masked_tokens_into(*make_layers):
    tokens = keras.Input((5,), dtype="int32")
    x = keras.layers.Embedding(9, 4, mask_zero=True, name="embedding")(tokens)
    for make in make_layers:
        x = make(x)
    return keras.Model(tokens, keras.layers.Dense(3, activation="softmax", name="head")(x), name="masked")


@pytest.mark.parametrize("model, named", [
    (lambda: masked_tokens_into(keras.layers.BatchNormalization(name="norm"), keras.layers.LSTM(3)),
     "BatchNormalization (norm: a Keras mask (from Embedding(mask_zero=True) or Masking) reaches it, and Keras "
     "computes this layer with the mask"),
    (lambda: masked_tokens_into(keras.layers.LSTM(3, return_sequences=True)),
     "loss categorical_crossentropy (the output carries a Keras mask, by which Keras weights the loss"),
    (lambda: masked_tokens_into(lambda x: keras.layers.MultiHeadAttention(2, 2, name="attention")(x, x),
                                keras.layers.GlobalAveragePooling1D()), "MultiHeadAttention (attention: a Keras mask"),
], ids=["batch_norm_statistics", "masked_loss", "attention"])
def test_a_mask_reaching_a_layer_or_loss_without_a_formula_for_it_is_named_and_the_model_still_checked(model, named):
    model = model()
    report = check_gradients(model, *random_batch(model, 4), fd_entries=6)
    assert report.passed
    [unavailable] = [line for line in str(report).splitlines() if line.startswith("manual: not available — ")]
    assert named in unavailable and ";" not in unavailable  # the one layer (or loss), no other blamed after it


def test_a_mask_the_caller_passes_is_named_not_taken_for_the_one_keras_makes():
    tokens, keep = keras.Input((5,), dtype="int32"), keras.Input((5,), dtype="bool")
    x = keras.layers.Embedding(9, 4, name="embedding")(tokens)
    outputs = keras.layers.Dense(3, activation="softmax", name="head")(keras.layers.GRU(3, name="gru")(x, mask=keep))
    model = keras.Model([tokens, keep], outputs)
    x, y = random_batch(model, 4)  # the boolean input is drawn as a float; made a mask here
    x[1] = np.arange(20).reshape(4, 5) % 3 != 0
    report = check_gradients(model, x, y, fd_entries=6)
    assert report.passed
    assert "GRU (gru: called with a mask of the caller's" in str(report)
