"""Layer by layer: each layer call is checked alone at the activations the batch gives it, so that a wrong gradient is
named by its layer and no layer above or below it is blamed (verifier/gradcheck/layer_check.py)."""
import io

import keras
import numpy as np
import pytest
from keras import ops

from gradcheck import assert_gradients, check_gradients
from gradcheck.check import random_batch
from gradcheck.dtypes import checked_in
from gradcheck.layer_check import Progress, check_layers, layer_calls
from gradcheck.methods import cast_batch

pytestmark = pytest.mark.any_backend


class Cubic(keras.layers.Layer):
    """y = x³ + w ⊙ x, as a user writes a custom layer; `mistake` slips a wrong gradient into it the ways users do."""

    def __init__(self, mistake=None, **kwargs):
        super().__init__(**kwargs)
        self.mistake = mistake

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1],), initializer=keras.initializers.Constant(0.7), name="w")

    def call(self, x):
        if self.mistake == "flipped_sign":
            @ops.custom_gradient
            def cube(v):
                def grad(*args, upstream=None):
                    upstream = args[0] if upstream is None else upstream
                    return -3 * upstream * v * v  # d(v³)/dv = +3v²: the sign flipped
                return v * v * v, grad
            return cube(x) + self.w * x
        if self.mistake == "stop_gradient_on_the_input":
            return x * x * x + self.w * ops.stop_gradient(x)  # hidden: w ⊙ x sends nothing back to x
        if self.mistake == "stop_gradient_on_the_weight":
            return x * x * x + ops.stop_gradient(self.w) * x  # hidden: w never learns
        return x * x * x + self.w * x


def model_with_cubic(mistake=None) -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5,))
    hidden = keras.layers.Dense(4, activation="tanh", name="before")(inputs)
    cubic = Cubic(mistake, name="cubic")(hidden)
    outputs = keras.layers.Dense(3, activation="softmax", name="after")(keras.layers.Dense(4, name="middle")(cubic))
    model = keras.Model(inputs, outputs, name=f"with_cubic_{mistake}")
    rng = np.random.default_rng(1)
    for variable in model.trainable_variables:  # generic weights: biases off 0
        variable.assign(rng.normal(0, 0.5, variable.shape))
    return model


def test_a_correct_custom_layer_passes_every_layer_with_every_method():
    model = model_with_cubic()
    report = check_gradients(model, *random_batch(model, 4), progress=False)
    assert report.passed, report.failure_message()
    rows = {row["layer"]: row for row in report.data["layers"]["calls"]}
    assert list(rows) == ["before", "cubic", "middle", "after"]  # topological order
    assert rows["cubic"]["manual"].startswith("none") and rows["before"]["manual"] == "formula"
    assert rows["before"]["methods"] == ["jvp_vs_tape", "manual_vs_tape", "tape_vs_finite_differences"]
    assert rows["cubic"]["methods"] == ["jvp_vs_tape", "tape_vs_finite_differences"]
    assert rows["cubic"]["blocks"] == ["input 0", "cubic/w"]


@pytest.mark.parametrize(("mistake", "subject"), [
    ("flipped_sign", "its input 0"),
    ("stop_gradient_on_the_input", "its input 0"),
    ("stop_gradient_on_the_weight", "its weight cubic/w"),
])
def test_a_wrong_custom_gradient_is_named_by_its_layer_and_no_other_layer_is_blamed(mistake, subject):
    model = model_with_cubic(mistake)
    x, y = random_batch(model, 4)
    report = check_gradients(model, x, y, progress=False)
    assert not report.passed
    assert [row["layer"] for row in report.failing_layers()] == ["cubic"]  # not `before`, whose weights it corrupts
    first = report.data["layers"]["first_failure"]
    assert first.startswith(f"layer cubic (Cubic): its gradient with respect to {subject} disagrees with finite "
                            "differences of its forward")
    with pytest.raises(AssertionError) as raised:
        assert_gradients(model, x, y, progress=False)
    assert str(raised.value).splitlines()[0].startswith(f"{model.name}: gradient check FAILED; first failing layer: "
                                                        "layer cubic (Cubic)")
    assert "no other layer's own check fails" in str(raised.value)
    assert "first failing layer: layer cubic" in str(report)  # the verdict line


def test_the_failure_gives_the_entry_values_and_tolerance_of_its_worst_disagreement_with_finite_differences():
    """Finite differences are named first, as the derivative-free truth (TensorFlow's forward mode does not use a
    custom reverse-mode gradient, so it disagrees with the tape too, and is named after)."""
    report = check_gradients(model_with_cubic("flipped_sign"), *random_batch(model_with_cubic(), 4), progress=False)
    row = report.failing_layers()[0]
    worst = max((c for c in row["comparisons"] if not c["passed"] and c["methods"] == "tape_vs_finite_differences"),
                key=lambda c: c["worst_over_tolerance"])
    a, b = worst["worst_values"]
    assert repr(a) in row["failure"] and repr(b) in row["failure"]
    assert f"{worst['worst_tolerance']:.3g}" in row["failure"] and worst["worst_over_tolerance"] > 10
    assert np.sign(a) != np.sign(b) or abs(a - b) > abs(a)  # the tape's sign, flipped against the forward's


def test_a_layer_check_costs_layer_forwards_not_model_forwards():
    """Each call's finite differences perturb that layer alone: a check of a layer reads nothing but its own
    arguments, so a model cut after the layer gives the same rows."""
    model = model_with_cubic()
    x, y = random_batch(model, 4)
    model64 = checked_in(model, "float64")
    x64, _ = cast_batch(x, y, "float64")
    whole = check_layers(model64, x64, progress=False)
    head = keras.Model(model64.inputs, model64.get_layer("cubic").output)
    cut = check_layers(head, x64, progress=False)
    for row, same in zip(whole["calls"][:2], cut["calls"], strict=True):
        assert row["layer"] == same["layer"]
        assert [c["worst_values"] for c in row["comparisons"]] == [c["worst_values"] for c in same["comparisons"]]


def test_outputs_of_a_million_scale_are_not_failed_by_rounding():
    """A correct layer whose outputs are ~1e6 (a user's unnormalised features): the central difference's rounding,
    eps·|f|/h ≈ 2e-4 per output, is allowed by the bound it is given, not failed (without the bound both layers failed,
    at 98× and 35× their tolerance, measured)."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, name="big",
                                                                    kernel_initializer=keras.initializers.Constant(3e5)),
                              keras.layers.Dense(2, name="out")], name="large_scale")
    x = np.random.default_rng(0).standard_normal((3, 6))
    report = check_layers(checked_in(model, "float64"), x, progress=False)
    assert report["passed"], [row["failure"] for row in report["calls"] if not row["passed"]]


def test_a_layer_called_twice_is_checked_at_each_call():
    shared = keras.layers.Dense(3, activation="tanh", name="shared")
    inputs = keras.Input((3,))
    outputs = keras.layers.Dense(2, name="out")(shared(shared(inputs)))
    model = keras.Model(inputs, outputs)
    names = [call.name for call in layer_calls(checked_in(model, "float64"), np.ones((2, 3)))]
    assert names == ["shared (call 1)", "shared (call 2)", "out"]


def test_a_subclassed_model_is_checked_per_tensor_by_finite_differences_of_the_whole_model():
    class TwoLayers(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.hidden, self.out = keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(2)

        def call(self, x):
            return self.out(self.hidden(x))

    model = TwoLayers()
    x, y = np.random.default_rng(0).standard_normal((4, 3)), np.random.default_rng(1).standard_normal((4, 2))
    model(x)
    report = check_gradients(model, x, y, progress=False)
    assert report.passed and not report.data["layers"]["available"]
    fd = {c["tensor"] for c in report.data["three_way"]["comparisons"] if c["methods"] == "tape_vs_finite_differences"}
    assert len(fd) == 4  # every tensor, as the check did before it went layer by layer
    assert "layer by layer: not run (TwoLayers is a subclassed model" in str(report)


def test_fd_entries_given_samples_every_tensor_by_the_whole_model_as_well():
    model = model_with_cubic()
    x, y = random_batch(model, 4)
    default = check_gradients(model, x, y, progress=False)
    assert not any(c["methods"] == "tape_vs_finite_differences" for c in default.data["three_way"]["comparisons"])
    both = check_gradients(model, x, y, fd_entries=4, progress=False)
    fd = [c for c in both.data["three_way"]["comparisons"] if c["methods"] == "tape_vs_finite_differences"]
    assert len(fd) == len(model.trainable_variables) and all(c["entries"] <= 4 for c in fd)
    assert both.data["layers"]["passed"]


def test_the_report_records_the_checks_cost_in_forward_backward_passes():
    model = model_with_cubic()
    report = check_gradients(model, *random_batch(model, 4), progress=False)
    cost = report.data["cost"]
    assert cost["forward_backward_seconds"] > 0
    assert cost["passes"] == pytest.approx(cost["seconds"] / cost["forward_backward_seconds"], rel=0.01)
    assert f"{cost['passes']} forward+backward passes of the model" in str(report)


def test_progress_is_one_line_updated_in_place_on_a_terminal_and_silent_when_asked(capsys):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    shown = Terminal()
    progress = Progress(3, True, "m: checking layer by layer", stream=shown, after=0)
    for done in range(3):
        progress.update(done, f"layer {done}")
    progress.close()
    text = shown.getvalue()
    assert "\r" in text and "2/3 layers" in text and "left" in text and text.endswith("3/3 layers checked in 0 s" +
                                                                                       " " * 50 + "\n")
    log = io.StringIO()  # not a terminal: nothing while it runs, one line at the end
    progress = Progress(3, True, "m", stream=log, after=0)
    progress.update(1)
    progress.close()
    assert log.getvalue().count("\n") == 1 and "\r" not in log.getvalue()
    model = model_with_cubic()
    check_gradients(model, *random_batch(model, 4), progress=False)
    assert "layers" not in capsys.readouterr().err


def test_bad_layer_entries_is_refused_before_any_computation():
    from gradcheck.errors import InputError

    model = model_with_cubic()
    with pytest.raises(InputError, match=r"layer_entries=-1: give a whole number, 0 or more"):
        check_gradients(model, *random_batch(model, 4), layer_entries=-1)
