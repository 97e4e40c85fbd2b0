"""Each manual layer, float64: forward against Keras's layer, backward against the tape and against
central differences (an independent, derivative-free value)."""
import ast

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO_ROOT

from backprop_suite.gradcheck import TOLERANCES, central_differences, sample_indices
from backprop_suite.manual import layers as manual

FD_RTOL, FD_ATOL = TOLERANCES["vs_finite_differences"]
EXACT = {"rtol": 1e-12, "atol": 1e-14}  # two exact float64 computations of the same value


def assert_backward_matches_tape_and_fd(reference, x, dx_manual, dout, rng, variable=None, grad_manual=None):
    """dL/d(x or variable) of L = Σ dout ⊙ reference(x): tape, then central differences on sampled entries."""
    target = variable if variable is not None else tf.Variable(x)
    manual_grad = grad_manual if variable is not None else dx_manual

    def loss():
        return tf.reduce_sum(dout * reference(x if variable is not None else target))

    with tf.GradientTape() as tape:
        value = loss()
    np.testing.assert_allclose(manual_grad, tape.gradient(value, target).numpy(), **EXACT)
    indices = sample_indices(target.shape, 40, rng)
    fd, _ = central_differences(loss, target, indices)
    np.testing.assert_allclose([np.asarray(manual_grad)[i] for i in indices], fd, rtol=FD_RTOL, atol=FD_ATOL)


@pytest.mark.parametrize("shape", [(3, 4, 5), (1, 7, 2)])
def test_affine_forward_and_backward_c002_4(shape):
    n, d_in, d_out = shape
    rng = np.random.default_rng(0)
    dense = keras.layers.Dense(d_out, dtype="float64")
    dense.build((None, d_in))
    dense.set_weights([rng.standard_normal((d_in, d_out)), rng.standard_normal(d_out)])
    x, layer = rng.standard_normal((n, d_in)), manual.Affine("dense", dense.kernel.numpy(), dense.bias.numpy())
    np.testing.assert_allclose(layer.forward(tf.constant(x)), dense(x), **EXACT)
    dout = rng.standard_normal((n, d_out))
    dx = layer.backward(tf.constant(dout)).numpy()
    assert_backward_matches_tape_and_fd(dense, x, dx, dout, rng)
    for name, variable in (("kernel", dense.kernel), ("bias", dense.bias)):
        assert_backward_matches_tape_and_fd(dense, x, dx, dout, rng, variable.value, layer.grads[name].numpy())


@pytest.mark.parametrize("layer_class, keras_fn", [
    (manual.ReLU, keras.activations.relu), (manual.Sigmoid, keras.activations.sigmoid),
    (manual.Tanh, keras.activations.tanh), (manual.Identity, keras.activations.linear),
])
def test_activation_forward_and_backward(layer_class, keras_fn):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 6))
    x[np.abs(x) < 1e-3] = 0.5  # keep central differences (step 1e-6) away from the ReLU kink
    layer = layer_class()
    np.testing.assert_allclose(layer.forward(tf.constant(x)), keras_fn(x), **EXACT)
    dout = rng.standard_normal(x.shape)
    assert_backward_matches_tape_and_fd(keras_fn, x, layer.backward(tf.constant(dout)).numpy(), dout, rng)


def test_relu_gradient_at_exactly_zero_is_zero_in_tensorflow_the_books_x_le_0_mask_c002_4():
    x = tf.constant([[-1.0, 0.0, 2.0]], tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(keras.activations.relu(x))
    assert tape.gradient(y, x).numpy().tolist() == [[0.0, 0.0, 1.0]]  # the slide's `x < 0` mask would give 1 at 0
    layer = manual.ReLU()
    layer.forward(x)
    assert layer.backward(tf.ones_like(x)).numpy().tolist() == [[0.0, 0.0, 1.0]]


def test_sigmoid_derivative_is_y_times_one_minus_y_c004_4():
    u = np.linspace(-6, 6, 13)
    y = 1 / (1 + np.exp(-u))
    fd = (1 / (1 + np.exp(-(u + 1e-6))) - 1 / (1 + np.exp(-(u - 1e-6)))) / 2e-6
    np.testing.assert_allclose(y * (1 - y), fd, rtol=FD_RTOL, atol=FD_ATOL)


def test_flatten_forward_and_backward():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 4, 5))
    layer, flatten = manual.Flatten(), keras.layers.Flatten(dtype="float64")
    np.testing.assert_allclose(layer.forward(tf.constant(x)), flatten(x), **EXACT)
    dout = rng.standard_normal((2, 60))
    assert_backward_matches_tape_and_fd(flatten, x, layer.backward(tf.constant(dout)).numpy(), dout, rng)


@pytest.mark.parametrize("shape", [(2, 6, 6, 3), (1, 5, 7, 2)])  # the second has odd sizes: a row/column dropped
def test_maxpool_forward_and_backward_route_the_gradient_to_the_argmax(shape):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape)
    layer, pool = manual.MaxPool2D(2), keras.layers.MaxPooling2D(2, dtype="float64")
    np.testing.assert_allclose(layer.forward(tf.constant(x)), pool(x), **EXACT)
    dout = rng.standard_normal(pool(x).shape)
    assert_backward_matches_tape_and_fd(pool, x, layer.backward(tf.constant(dout)).numpy(), dout, rng)


def test_maxpool_tie_sends_the_gradient_to_the_first_maximum_in_row_major_order_like_tensorflow():
    x = tf.constant(np.array([[0.0, 3.0], [3.0, 1.0]]).reshape(1, 2, 2, 1))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(keras.layers.MaxPooling2D(2, dtype="float64")(x))
    assert tape.gradient(y, x).numpy().ravel().tolist() == [0.0, 1.0, 0.0, 0.0]
    layer = manual.MaxPool2D(2)
    layer.forward(x)
    assert layer.backward(tf.ones((1, 1, 1, 1), tf.float64)).numpy().ravel().tolist() == [0.0, 1.0, 0.0, 0.0]


@pytest.mark.parametrize("shape, kernel", [((2, 6, 6, 1), (3, 3, 1, 4)), ((1, 7, 5, 3), (3, 2, 3, 2))])
def test_conv2d_forward_and_backward_with_the_rotated_kernel(shape, kernel):
    rng = np.random.default_rng(4)
    conv = keras.layers.Conv2D(kernel[3], kernel[:2], dtype="float64")
    conv.build((None, *shape[1:]))
    conv.set_weights([rng.standard_normal(kernel), rng.standard_normal(kernel[3])])
    x = rng.standard_normal(shape)
    layer = manual.Conv2D("conv", conv.kernel.numpy(), conv.bias.numpy())
    np.testing.assert_allclose(layer.forward(tf.constant(x)), conv(x), **EXACT)
    dout = rng.standard_normal(conv(x).shape)
    dx = layer.backward(tf.constant(dout)).numpy()
    assert_backward_matches_tape_and_fd(conv, x, dx, dout, rng)
    for name, variable in (("kernel", conv.kernel), ("bias", conv.bias)):
        assert_backward_matches_tape_and_fd(conv, x, dx, dout, rng, variable.value, layer.grads[name].numpy())


def test_dropout_is_keras_inverted_dropout_and_backward_reuses_the_forward_mask():
    rng = np.random.default_rng(5)
    x = tf.constant(rng.uniform(0.5, 1.5, (8, 50)))  # nonzero, so Keras's mask can be read off its output
    dropout = keras.layers.Dropout(0.25, seed=1, dtype="float64")
    with tf.GradientTape() as tape:
        tape.watch(x)
        y_keras = dropout(x, training=True)
        value = tf.reduce_sum(y_keras * 2.0)
    mask = y_keras.numpy() != 0
    layer = manual.Dropout("dropout", 0.25)
    np.testing.assert_allclose(layer.forward(x, mask), y_keras, **EXACT)
    np.testing.assert_allclose(layer.backward(tf.fill(x.shape, tf.constant(2.0, tf.float64))),
                               tape.gradient(value, x), **EXACT)
    assert layer.forward(x, None) is x  # inference: the identity


LOSSES = [
    # Keras's functional losses (per sample, in the inputs' float64), averaged over the batch.
    (manual.SoftmaxCrossEntropy,
     lambda t, u: tf.reduce_mean(keras.losses.categorical_crossentropy(t, u, from_logits=True)), "onehot"),
    (manual.SigmoidBinaryCrossEntropy,
     lambda t, u: tf.reduce_mean(keras.losses.binary_crossentropy(t, u, from_logits=True)), "binary"),
    # ½ Σ_k (u − t)² averaged over the batch = Keras's MSE (a mean over the K units) · K / 2
    (manual.IdentityHalfSquaredError,
     lambda t, u: tf.reduce_mean(keras.losses.mean_squared_error(t, u)) * t.shape[-1] / 2, "real"),
]


def _targets(kind, rng, shape):
    if kind == "onehot":
        return np.eye(shape[1])[rng.integers(0, shape[1], shape[0])]
    return rng.integers(0, 2, shape).astype(np.float64) if kind == "binary" else rng.standard_normal(shape)


@pytest.mark.parametrize("loss_class, keras_loss, targets", LOSSES,
                         ids=["softmax_ce", "sigmoid_bce", "identity_half_se"])
@pytest.mark.parametrize("scale", [1.0, 50.0], ids=["logits~1", "logits~50"])
def test_output_delta_is_y_minus_t_over_n_c004_1_to_3(loss_class, keras_loss, targets, scale):
    rng = np.random.default_rng(6)
    u = rng.choice([-1.0, 1.0], (5, 4)) * scale * rng.uniform(0.5, 1.0, (5, 4))
    t = _targets(targets, rng, u.shape)
    layer = loss_class()
    loss = layer.forward(tf.constant(u), tf.constant(t))
    np.testing.assert_allclose(loss, keras_loss(t, u), rtol=1e-12)
    du = layer.backward().numpy()
    assert np.all(np.isfinite(du)) and np.isfinite(loss)
    assert_backward_matches_tape_and_fd(lambda v: keras_loss(t, v), u, du, np.array(1.0), rng)


def test_manual_backprop_uses_no_gradient_machinery_of_tensorflow():
    """The manual path must not call a tape or gradient kernels: that would check TensorFlow against itself."""
    forbidden = {"GradientTape", "gradients", "gradient", "ForwardAccumulator", "custom_gradient", "jvp",
                 "value_and_gradient"}
    for path in (REPO_ROOT / "backprop_suite" / "manual").glob("*.py"):
        used = {node.attr if isinstance(node, ast.Attribute) else node.id
                for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, (ast.Attribute, ast.Name))}
        suspicious = {name for name in used if name in forbidden or "backprop" in name.lower() or name.endswith("Grad")}
        assert not suspicious, (path.name, suspicious)
