"""What check_gradients takes as Keras's own fit takes it (dicts keyed by input and output name, a loss's
reduction, a model already in float64) and what it refuses: one InputError naming the argument and a remedy."""
import keras
import numpy as np
import pytest

from backprop_suite.models.zoo import ZOO
from gradcheck import Tolerances, check_gradients
from gradcheck.check import random_batch
from gradcheck.errors import InputError


def with_two_dropouts() -> keras.Sequential:
    """Keras's Dropout takes a mask; SpatialDropout2D, a subclass that drops whole channels, does not."""
    return keras.Sequential([keras.Input((8, 8, 2)), keras.layers.Conv2D(4, 3, activation="tanh", name="conv"),
                             keras.layers.Dropout(0.5, name="drop"), keras.layers.SpatialDropout2D(0.5, name="spatial"),
                             keras.layers.Flatten(name="flatten"),
                             keras.layers.Dense(3, activation="softmax", name="head")], name="two_dropouts")


@pytest.mark.parametrize("options, named", [
    ({"dropout_masks": [np.ones((4, 6, 6, 4))]}, "dropout_masks must be a dict"),
    ({"dropout_masks": {"drop0ut": np.ones((4, 6, 6, 4))}}, "two_dropouts has no Dropout layer of that name"),
    ({"dropout_masks": {"spatial": np.ones((4, 1, 1, 4))}}, "its Dropout layers: drop"),
    ({"dropout_masks": {"drop": np.ones((4, 6, 6))}}, "has shape (4, 6, 6); give a 0/1 array of the layer's output"),
    ({"x": {"image": np.zeros((4, 8, 8, 2))}}, "x: its keys ['image'] are not two_dropouts's inputs"),
    ({"x": [np.zeros((4, 8, 8, 2))] * 2}, "x: 2 arrays for two_dropouts's single input; give one NumPy array"),
    ({"y": np.full((4, 3), np.nan)}, "y holds 12 NaN or infinite values"),
    ({"dtype": "float16"}, "dtype='float16' is not one of float64, float32"),
    ({"fd_entries": 0}, "fd_entries=0: give a positive whole number"),
    ({"seed": -1}, "seed=-1: give a whole number in [0, 2**32)"),
    ({"tolerances": {"finite_differences": (1e-4, 1e-6)}}, "give a gradcheck.Tolerances"),
    ({"tolerances": Tolerances(finite_differences=(1e-4,))}, "tolerances.finite_differences=(0.0001,): give (rtol"),
    ({"tolerances": Tolerances(fd_step=0)}, "tolerances.fd_step=0: give a finite step > 0 (default 1e-06)"),
])
def test_check_gradients_refuses_a_bad_argument_naming_it(options, named):
    model = with_two_dropouts()
    x, y = random_batch(model, 4)
    arguments = {"x": x, "y": y, "training": True, **options}
    with pytest.raises(InputError) as error:
        check_gradients(model, **arguments)
    assert named in str(error.value)


def test_check_gradients_refuses_nan_weights_and_a_loss_that_is_not_finite():
    model = with_two_dropouts()
    x, y = random_batch(model, 4)
    model.get_layer("head").kernel.assign(np.full(model.get_layer("head").kernel.shape, np.nan))
    with pytest.raises(InputError, match="weight .*head/kernel holds NaN or infinite values"):
        check_gradients(model, x, y)
    relu_head = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu",
                                                                         kernel_initializer="zeros")], name="dead_relu")
    with pytest.raises(InputError, match="the loss at these weights and this batch is nan"):  # 0 · log(0/0)
        check_gradients(relu_head, np.ones((2, 4)), np.eye(3)[:2], loss="categorical_crossentropy")


@pytest.mark.any_backend
def test_a_model_built_on_dicts_takes_inputs_targets_and_losses_as_dicts_as_fit_does():
    """Keys, not positions: the inputs are declared in one order and the dict keys sort in another, and the
    compiled loss is a dict keyed by output. The loss checked is the one Keras's own evaluate computes."""
    keras.utils.set_random_seed(0)
    pixels, extra = keras.Input((6,), name="pixels"), keras.Input((2,), name="extra")
    hidden = keras.layers.Dense(5, activation="tanh", name="hidden")(keras.layers.Concatenate()([pixels, extra]))
    outputs = {"label": keras.layers.Dense(3, activation="softmax", name="label_head")(hidden),
               "score": keras.layers.Dense(1, name="score_head")(hidden)}
    model = keras.Model({"pixels": pixels, "extra": extra}, outputs, name="dicts")
    model.compile(loss={"label": "categorical_crossentropy", "score": "mean_squared_error"})
    rng = np.random.default_rng(0)
    x = {"pixels": rng.standard_normal((5, 6)), "extra": rng.standard_normal((5, 2))}
    y = {"label": np.eye(3)[rng.integers(0, 3, 5)], "score": rng.standard_normal((5, 1))}
    report = check_gradients(model, x, y)
    assert report.passed, str(report)
    assert report.data["three_way"]["manual"]["available"]
    keras_loss = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    assert report.data["three_way"]["tape_loss"] == pytest.approx(keras_loss, rel=1e-5)  # float32 evaluate


def test_check_gradients_refuses_masks_for_a_subclassed_model():
    model = ZOO["subclassed_mlp"].build()
    with pytest.raises(InputError, match="dropout masks need a Sequential or Functional model"):
        check_gradients(model, np.zeros((2, 8)), np.eye(4)[:2], dropout_masks={"dense1": np.ones((2, 16))})


class ApplyFunction(keras.layers.Layer):
    """A user's layer taking a Python function: Keras cannot serialise its config, so it cannot rebuild it."""

    def __init__(self, function, **kwargs):
        super().__init__(**kwargs)
        self.function = function

    def call(self, x):
        return self.function(x)


def test_a_model_that_cannot_be_rebuilt_is_cast_to_float64_in_place_or_checked_as_built_in_float64():
    """A layer whose config cannot be serialised cannot be rebuilt, so the check cannot make its float64 copy: it casts
    the model itself to float64 for the check, and says so; a model built in float64 is checked as it is."""
    def build():
        return keras.Sequential([keras.Input((4,), dtype=keras.config.dtype_policy().compute_dtype),
                                 ApplyFunction(lambda t: 2.0 * t), keras.layers.Dense(3, activation="softmax")])
    x, y = np.random.default_rng(0).standard_normal((5, 4)), np.eye(3)[[0, 1, 2, 0, 1]]
    report = check_gradients(build(), x, y)
    assert report.passed and "float64 in place" in str(report), str(report)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float64")
    try:
        model = build()
    finally:
        keras.config.set_dtype_policy(previous)
    report = check_gradients(model, x, y)
    assert report.passed and not report.data["cast_in_place"], str(report)


def test_a_summed_loss_is_checked_as_keras_sums_it_and_an_unreduced_one_refused():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="tanh")], name="summed")
    model.compile(loss=keras.losses.MeanSquaredError(reduction="sum"))
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((5, 4)), rng.standard_normal((5, 2))
    report = check_gradients(model, x, y)
    assert report.passed, str(report)
    assert report.data["three_way"]["tape_loss"] == pytest.approx(model.evaluate(x, y, verbose=0), rel=1e-6)
    assert "reduction='sum': the formulas average over the batch" in str(report)  # no formula for a sum: named
    with pytest.raises(InputError, match=r"reduction=None\) gives one loss per sample"):
        check_gradients(model, x, y, loss=keras.losses.MeanSquaredError(reduction=None))


def test_a_penalty_keras_cannot_compute_in_float64_is_named_with_a_remedy():
    """Keras's OrthogonalRegularizer multiplies by a float32 factor, which TensorFlow refuses with a float64 kernel."""
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(
        4, kernel_regularizer=keras.regularizers.OrthogonalRegularizer(0.1), name="hidden")], name="orthogonal")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("JAX and PyTorch promote the float32 factor to float64")
    with pytest.raises(InputError, match=r"orthogonal: its OrthogonalRegularizer penalty on hidden/kernel cannot "
                                         r"be computed in float64 .* check a copy without it"):
        check_gradients(model, np.ones((3, 5)), np.zeros((3, 4)))


class UnnamedLayers(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.first, self.second = keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(2)

    def call(self, x):
        return self.second(self.first(x))


@pytest.mark.any_backend
def test_a_subclassed_model_is_reported_by_its_own_weight_names_though_its_copies_number_their_layers_anew():
    """The float64 copies of a subclassed model build its unnamed layers anew, and Keras names them dense_7, dense_8:
    the report keeps the model's names (when it took the copies' own, the per-tensor check hit a KeyError)."""
    model = UnnamedLayers(name="unnamed")
    model(np.zeros((1, 3)))
    names = [f"{layer.name}/{v.name}" for layer in model.layers for v in layer.trainable_weights]
    report = check_gradients(model, np.ones((4, 3)), np.zeros((4, 2)), loss="mse")
    assert report.passed, str(report)
    assert list(dict.fromkeys(c["tensor"] for c in report.data["three_way"]["comparisons"])) == names


@pytest.mark.any_backend
@pytest.mark.parametrize("loss", [
    keras.losses.Huber(delta=0.5), keras.losses.CategoricalCrossentropy(label_smoothing=0.2),
    keras.losses.MeanSquaredError(reduction="sum")], ids=lambda loss: type(loss).__name__)
def test_a_compiled_loss_is_checked_with_its_options_as_keras_evaluates_it(loss):
    """Keras re-makes a copy's compiled loss from its config, and Huber(delta=0.5) came back with delta=1: the check
    read the float64 copy's loss and so checked another function than the model's."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")], name="compiled")
    model.compile(loss=loss)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((6, 4)), np.eye(3)[rng.integers(0, 3, 6)]
    report = check_gradients(model, x, y)
    assert report.passed, str(report)
    assert report.data["three_way"]["tape_loss"] == pytest.approx(model.evaluate(x, y, verbose=0), rel=1e-6)


@pytest.mark.any_backend
@pytest.mark.parametrize("loss_weights", [[1.0, 0.25], {"value": 3.0, "label": 0.5}], ids=["list", "dict"])
def test_compiled_loss_weights_weigh_each_output_as_fit_does(loss_weights):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5,))
    label = keras.layers.Dense(3, activation="softmax", name="label")(inputs)
    model = keras.Model(inputs, [label, keras.layers.Dense(1, name="value")(inputs)], name="weighted")
    model.compile(loss=["categorical_crossentropy", "mse"], loss_weights=loss_weights)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((6, 5)), [np.eye(3)[rng.integers(0, 3, 6)], rng.standard_normal((6, 1))]
    report = check_gradients(model, x, y)
    assert report.passed, str(report)
    assert report.data["three_way"]["manual"]["available"]  # the formulas weigh each output's δ too
    assert report.data["three_way"]["tape_loss"] == pytest.approx(model.evaluate(x, y, verbose=0)[0], rel=1e-6)
    assert "loss 0.5·categorical_crossentropy + 3·mean_squared_error" in str(report) if isinstance(loss_weights, dict) \
        else "loss categorical_crossentropy + 0.25·mean_squared_error" in str(report)


@pytest.mark.any_backend
def test_tolerances_a_user_sets_are_the_ones_every_comparison_uses_and_the_report_records():
    """The defaults pass this model; finite differences held to rtol 1e-13 with a step of 1e-3 (their truncation
    error, ~h²·|L‴|/6, is far larger) fail at every layer, and the report records what was asked."""
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="tanh", name="hidden"),
                              keras.layers.Dense(3, activation="softmax", name="head")], name="small")
    x, y = random_batch(model, 6)
    assert check_gradients(model, x, y, progress=False).passed
    strict = Tolerances(finite_differences=(1e-13, 0.0), fd_step=1e-3, directional_step=1e-3)
    report = check_gradients(model, x, y, progress=False, tolerances=strict)
    assert not report.passed
    assert {row["layer"] for row in report.failing_layers()} == {"hidden", "head"}
    assert tuple(report.data["tolerances"]["finite_differences"]) == (1e-13, 0.0)
    assert report.data["tolerances"]["fd_step"] == 1e-3
