"""Models as keras-io writes them, checked without a false alarm, a crash or a needless refusal: a loss compiled as a
plain Python function, a layer's add_loss as the only loss, a layer drawing noise in floatx, multi-hot targets under
a categorical cross-entropy, and a squeeze-and-excite block whose Multiply broadcasts (N, 1, 1, C) gates over a map.
Each is judged by finite differences of Keras's own forward, which no formula here computes."""
import keras
import numpy as np
import pytest
from keras import layers, ops

from gradcheck import autodiff, check_gradients
from gradcheck.manual.layers import Add, Maximum, Multiply, Subtract

# keras-io's examples as their authors wrote them: scripts/test.sh --all
pytestmark = [pytest.mark.any_backend, pytest.mark.full]


def generic_biases(model, rng):
    """Biases off Keras's zeros, so that no ReLU input sits on its kink for a whole channel."""
    for layer in model.layers:
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.normal(0, 0.3, layer.bias.shape))
    return model


def contrastive_loss(y_true, y_pred):
    """keras-io's siamese example compiles a plain function like this one: Keras cannot rebuild it from a config."""
    margin = 1.0
    return ops.mean((1 - y_true) * ops.square(y_pred) + y_true * ops.square(ops.maximum(margin - y_pred, 0)), axis=-1)


def test_a_model_compiled_with_a_plain_python_loss_is_checked_with_that_loss():
    rng = np.random.default_rng(0)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, layers.Dense(1)(layers.Dense(3, activation="tanh")(inputs)))
    model.compile(optimizer="sgd", loss=contrastive_loss)
    x, y = rng.standard_normal((6, 4)), rng.integers(0, 2, (6, 1)).astype("float64")
    report = check_gradients(model, x, y)
    assert report.passed and report.data["three_way"]["losses"] == ["contrastive_loss"]
    assert report.data["three_way"]["tape_loss"] == pytest.approx(
        float(model.compute_loss(x=x.astype("float32"), y=y.astype("float32"), y_pred=model(x.astype("float32")))),
        rel=1e-5)


class Penalised(layers.Layer):
    """A layer whose add_loss is the model's only loss (keras-io's VAE adds its KL term this way)."""

    def call(self, x):
        self.add_loss(ops.mean(ops.square(x)))
        return x


def test_add_loss_alone_is_the_checked_loss_as_evaluate_computes_it_and_is_named():
    rng = np.random.default_rng(0)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, Penalised(name="kl")(layers.Dense(3)(inputs)))
    model.compile(optimizer="sgd")
    x, y = rng.standard_normal((4, 4)), rng.standard_normal((4, 3))
    report = check_gradients(model, x, y)
    evaluated = model.evaluate(x.astype("float32"), y.astype("float32"), verbose=0)
    assert report.passed and report.data["three_way"]["tape_loss"] == pytest.approx(evaluated, rel=1e-5)
    assert "kl add_loss" in str(report) and report.data["three_way"]["losses"] == ["no_output_loss"]


def test_a_model_whose_only_loss_is_an_activity_penalty_gets_the_formulas_too():
    """Compiled without a loss, its loss is the L2 penalty on a layer's output: the formulas send no gradient from the
    output (δ = 0) and the penalty's from where it sits; against the tape and finite differences."""
    rng = np.random.default_rng(5)
    inputs = keras.Input((4,))
    hidden = layers.Dense(3, activation="tanh", activity_regularizer=keras.regularizers.L2(0.3))(inputs)
    model = keras.Model(inputs, layers.Dense(2)(hidden))
    model.compile(optimizer="sgd")
    x, y = rng.standard_normal((4, 4)), rng.standard_normal((4, 2))
    report = check_gradients(generic_biases(model, rng), x, y)
    assert report.passed and report.data["three_way"]["manual"]["available"]
    evaluated = model.evaluate(x.astype("float32"), y.astype("float32"), verbose=0)
    assert report.data["three_way"]["manual_loss"] == pytest.approx(evaluated, rel=1e-5)


def test_a_model_compiled_without_any_loss_is_refused_not_checked_at_zero():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, layers.Dense(3)(inputs))
    model.compile(optimizer="sgd")
    with pytest.raises(Exception, match="no loss to differentiate"):
        check_gradients(model, np.ones((2, 4)), np.ones((2, 3)))


class Sampling(layers.Layer):
    """keras-io's VAE: z = μ + exp(½ log σ²)·ε, ε drawn by keras.random.normal in floatx."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(1337)

    def call(self, inputs):
        z_mean, z_log_var = inputs
        epsilon = keras.random.normal(shape=ops.shape(z_mean), seed=self.seed_generator)
        return z_mean + ops.exp(0.5 * z_log_var) * epsilon


def test_a_layer_drawing_noise_in_floatx_is_copied_to_float64_and_checked():
    rng = np.random.default_rng(0)
    inputs = keras.Input((4,))
    z = Sampling()([layers.Dense(2)(inputs), layers.Dense(2)(inputs)])
    model = keras.Model(inputs, layers.Dense(3)(z))
    report = check_gradients(model, rng.standard_normal((4, 4)), rng.standard_normal((4, 3)))
    assert report.passed and keras.config.floatx() == "float32"


def test_multi_hot_targets_get_the_true_derivative_and_a_wrong_tape_is_named_as_such():
    """δ = (softmax·Σt − t)/N for rows of targets summing to 2: the formula agrees with finite differences. On
    TensorFlow, where Keras computes the loss from the softmax's logits (tf.nn.softmax_cross_entropy_with_logits,
    whose gradient is softmax − t), the tape does not, and the report says why (whether Keras takes that path
    varied between runs of this test in one process and another); on JAX and PyTorch the tape agrees."""
    rng = np.random.default_rng(0)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, layers.Dense(3, activation="softmax")(layers.Dense(5, activation="tanh")(inputs)))
    targets = np.array([[1, 1, 0], [0, 1, 1], [1, 0, 1], [1, 1, 0]], dtype="float64")
    report = check_gradients(generic_biases(model, rng), rng.standard_normal((4, 4)), targets, fd_entries=32)
    by_pair = {(c["tensor"], c["methods"]): c["passed"] for c in report.data["three_way"]["comparisons"]}
    assert all(passed for (_, methods), passed in by_pair.items() if methods == "manual_vs_finite_differences")
    tape_right = all(p for (_, m), p in by_pair.items() if m == "tape_vs_finite_differences")
    assert tape_right == report.data["directional"]["checks"]["tape_vs_finite_differences"]["passed"]
    assert report.data["layers"]["passed"]  # the layers are right: the loss's tape is not
    if autodiff.BACKEND == "tensorflow" and not tape_right:
        assert "do not sum to 1" in str(report) and "do not sum to 1" in report.failure_message()
    else:
        assert tape_right and report.passed and "do not sum to 1" not in str(report)


def test_one_hot_targets_name_no_fault_of_the_tape():
    rng = np.random.default_rng(1)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, layers.Dense(3, activation="softmax")(inputs))
    report = check_gradients(generic_biases(model, rng), rng.standard_normal((4, 4)), np.eye(3)[[0, 1, 2, 0]])
    assert report.passed and not report.data["autodiff_not_the_derivative"]


def squeeze_and_excite(merge=layers.Multiply):
    """EfficientNet's block in small: a feature map scaled by per-channel gates from a 1×1 map."""
    inputs = keras.Input((5, 5, 3))
    features = layers.Conv2D(4, 3, padding="same", activation="swish")(inputs)
    gates = layers.GlobalAveragePooling2D(keepdims=True)(features)
    gates = layers.Conv2D(2, 1, activation="swish")(gates)
    gates = layers.Conv2D(4, 1, activation="sigmoid")(gates)
    scaled = merge()([features, gates])
    return keras.Model(inputs, layers.Dense(3, activation="softmax")(layers.GlobalAveragePooling2D()(scaled)))


@pytest.mark.parametrize("merge", [layers.Multiply, layers.Add, layers.Subtract, layers.Maximum])
def test_a_merge_that_broadcasts_a_squeeze_and_excite_gate_gets_the_full_check(merge):
    rng = np.random.default_rng(2)
    model = generic_biases(squeeze_and_excite(merge), rng)
    report = check_gradients(model, rng.standard_normal((2, 5, 5, 3)), np.eye(3)[[0, 2]])
    assert report.passed and report.data["three_way"]["manual"]["available"], str(report)


@pytest.mark.parametrize("step", [Add, Subtract, Multiply, Maximum])
def test_a_broadcast_inputs_gradient_is_summed_over_the_axes_it_was_repeated_along(step):
    """By hand: with dout = 1 everywhere and a (1, 1, 2) input broadcast over a (2, 3, 2) one, Add sends each of the
    small input's entries the 6 ones it was added to."""
    big = ops.convert_to_tensor(np.arange(12.0).reshape(2, 3, 2))  # channel 0 holds 0, 2, ..., 10; channel 1 1, ..., 11
    small = ops.convert_to_tensor(np.array([[[0.5, 20.0]]]))
    merge = step()
    merge.forward([big, small])
    grads = merge.backward(ops.ones((2, 3, 2), dtype="float64"))
    assert [tuple(g.shape) for g in grads] == [(2, 3, 2), (1, 1, 2)]
    expected_small = {Add: [6.0, 6.0], Subtract: [-6.0, -6.0], Multiply: [30.0, 36.0],  # Σ of each big channel
                      Maximum: [1.0, 6.0]}[step]  # 0.5 beats only channel 0's 0; 20 beats all 6 of channel 1
    np.testing.assert_allclose(ops.convert_to_numpy(grads[1]).ravel(), expected_small)


def residual_written_with_operators():
    """keras-io writes residuals and gates with Python operators on Keras tensors: `x + y`, `x * y`, `1 - x`,
    `x * (1 / 6)` (MobileNetV3's hard sigmoid: a constant float32 cannot hold, so a formula that rounds it through
    float32 fails by 3e-8); a Functional model records each as a keras.ops node, not a layer."""
    inputs = keras.Input((5,))
    hidden = layers.Dense(5, activation="tanh")(inputs)
    gate = layers.Dense(5, activation="sigmoid")(inputs)
    mixed = hidden * gate + (1 - gate) * inputs  # a highway layer
    shifted = (mixed - hidden) * (1.0 / 6.0) + 3.0
    return keras.Model(inputs, layers.Dense(3, activation="softmax")(shifted))


def test_python_operators_on_keras_tensors_get_the_merge_formulas_with_or_without_a_constant():
    rng = np.random.default_rng(3)
    model = generic_biases(residual_written_with_operators(), rng)
    report = check_gradients(model, rng.standard_normal((4, 5)), np.eye(3)[[0, 1, 2, 0]])
    assert report.data["three_way"]["manual"]["available"], report.data["three_way"]["manual"]["missing"]
    assert report.passed, str(report)


def test_an_operation_without_a_formula_is_named_as_an_operation_and_many_alike_on_one_line():
    inputs = keras.Input((4,))
    branches = [ops.sqrt(ops.abs(layers.Dense(4, name=f"branch{k}")(inputs)) + 1.0) for k in range(5)]
    model = keras.Model(inputs, layers.Dense(2)(layers.Concatenate()(branches)))
    rng = np.random.default_rng(4)
    report = check_gradients(model, rng.standard_normal((3, 4)), rng.standard_normal((3, 2)))
    missing = report.data["three_way"]["manual"]["missing"]
    assert report.passed and len(missing) == 2, missing  # Absolute × 5 and Sqrt × 5, each on one line
    assert all(" × 5 (" in line and "no manual formula for this keras.ops operation" in line for line in missing), \
        missing
    assert "layer class" not in str(report)


class Projection(layers.Layer):
    """keras-io's way: a positional argument and no get_config, so Keras cannot rebuild it in float64."""

    def __init__(self, units):
        super().__init__()
        self.units = units

    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1], self.units), initializer="glorot_uniform")
        self.b = self.add_weight(shape=(self.units,), initializer="random_normal")

    def call(self, x):
        return ops.tanh(ops.matmul(x, self.w) + self.b)


class SumOfSquares(keras.regularizers.Regularizer):
    """A regularizer without get_config."""

    def __call__(self, w):
        return 0.01 * ops.sum(ops.square(w))


class Classifier(keras.Model):
    """A subclassed model whose __init__ takes no **kwargs."""

    def __init__(self, wrong_gradient=False):
        super().__init__()
        self.projection = Projection(5)
        self.norm = layers.BatchNormalization()
        self.head = layers.Dense(3, activation="softmax", kernel_regularizer=SumOfSquares())
        self.wrong_gradient = wrong_gradient

    def call(self, x):
        h = self.norm(self.projection(x))
        return self.head(wrong_square(h) if self.wrong_gradient else ops.square(h))


@ops.custom_gradient
def wrong_square(v):
    def grad(*args, upstream=None):
        upstream = args[0] if upstream is None else upstream
        return upstream * v  # should be 2v
    return ops.square(v), grad


@pytest.mark.parametrize("wrong_gradient", [False, True])
def test_a_model_that_cannot_be_copied_is_checked_in_float64_in_place_and_left_as_it_was(wrong_gradient):
    rng = np.random.default_rng(0)
    model = Classifier(wrong_gradient)
    x, y = rng.standard_normal((4, 4)), np.eye(3)[[0, 1, 2, 0]]
    before = model(x.astype("float32"))
    weights = [ops.convert_to_numpy(v.value).copy() for v in model.variables]
    report = check_gradients(model, x, y)
    assert "float64 in place: no float64 copy of this model can be made" in str(report)
    assert report.passed != wrong_gradient, report.failure_message()
    if not wrong_gradient:  # forward and reverse mode in float64 agree to ~1e-15; in float32 they would to ~1e-7
        assert report.data["directional"]["checks"]["jvp_vs_tape"]["max_rel_error"] < 1e-12
    assert all(v.dtype == "float32" for v in model.variables) and model.compute_dtype == "float32"
    for variable, value in zip(model.variables, weights, strict=True):
        np.testing.assert_array_equal(ops.convert_to_numpy(variable.value), value)
    np.testing.assert_array_equal(ops.convert_to_numpy(model(x.astype("float32"))), ops.convert_to_numpy(before))


def test_a_two_tower_model_scoring_by_dot_gets_the_full_check():
    """keras-io's recommender and siamese examples score a pair by the Dot of two embeddings."""
    rng = np.random.default_rng(2)
    left, right = keras.Input((4,)), keras.Input((3,))
    score = layers.Dot(axes=1)([layers.Dense(5, activation="tanh")(left), layers.Dense(5)(right)])
    model = keras.Model([left, right], layers.Dense(1, activation="sigmoid")(score))
    report = check_gradients(generic_biases(model, rng), [rng.standard_normal((4, 4)), rng.standard_normal((4, 3))],
                             rng.integers(0, 2, (4, 1)).astype("float64"))
    assert report.passed and report.data["three_way"]["manual"]["available"], str(report)


def test_keras_ios_seq2seq_encoder_states_into_the_decoder_get_the_full_check():
    """keras-io's character-level sequence-to-sequence model, shrunk: the encoder LSTM's returned states are the
    decoder LSTM's initial_state; a GRU passes its state on the same way."""
    rng = np.random.default_rng(3)
    encoder_inputs, decoder_inputs = keras.Input((5, 3)), keras.Input((4, 2))
    _, h, c = layers.LSTM(4, return_state=True)(encoder_inputs)
    decoded = layers.LSTM(4, return_sequences=True)(decoder_inputs, initial_state=[h, c])
    decoded, state = layers.GRU(4, return_sequences=True, return_state=True)(decoded, initial_state=h)
    outputs = layers.Dense(3, activation="softmax")(layers.Concatenate()([decoded, layers.RepeatVector(4)(state)]))
    model = keras.Model([encoder_inputs, decoder_inputs], outputs)
    targets = np.eye(3)[rng.integers(0, 3, (2, 4))]
    report = check_gradients(generic_biases(model, rng), [rng.standard_normal((2, 5, 3)),
                                                          rng.standard_normal((2, 4, 2))], targets)
    assert report.passed and report.data["three_way"]["manual"]["available"], str(report)
