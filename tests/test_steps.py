"""The compiled manual-backprop training step updates the weights exactly as the GradientTape step does."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from backprop_suite.bench import forward_flops_per_sample
from backprop_suite.models import build_model
from backprop_suite.steps import manual_step, tape_step
from gradcheck.dtypes import with_dtype
from gradcheck.manual import conv
from gradcheck.parameters import parameters
from gradcheck.reference import reference_loss


def tape_step_with_masks(model, optimizer, masks):
    variables = list(parameters(model).values())

    @tf.function
    def step(x, t):
        with tf.GradientTape() as tape:
            loss = reference_loss(model, x, t, masks)
        optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    return step


def train_twice(name, steps, n=8, masked=False):
    """The same float64 model and batches trained by the tape step and by the manual step; both weight lists."""
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    reference = with_dtype(build_model(name), "float64")
    for variable in reference.trainable_variables:  # nonzero biases: no pre-activation sits exactly on a kink
        if "bias" in variable.path:
            variable.assign(rng.normal(0, 0.1, variable.shape))
    twin_model = with_dtype(reference, "float64")
    shape = reference.input_shape[1:]
    batches = [(rng.random((n, *shape)), np.eye(10)[rng.integers(0, 10, n)]) for _ in range(steps)]
    masks = {"dropout1": rng.random((n, 12, 12, 32)) > 0.25, "dropout2": rng.random((n, 128)) > 0.5} if masked else None
    by_tape = (tape_step_with_masks(reference, keras.optimizers.Adam(1e-3), masks) if masked
               else tape_step(reference, keras.optimizers.Adam(1e-3)))
    by_hand = manual_step(twin_model, keras.optimizers.Adam(1e-3), dropout_masks=masks)
    for x, t in batches:
        by_tape(x, t)
        by_hand(x, t)
    return reference.get_weights(), twin_model.get_weights()


def max_rel_difference(a, b):
    return max(float(np.max(np.abs(u - v)) / np.max(np.abs(u))) for u, v in zip(a, b, strict=True))


def test_manual_step_trains_two_layer_net_as_the_tape_step_does():
    tape_weights, manual_weights = train_twice("two_layer_net", steps=5)
    assert max_rel_difference(tape_weights, manual_weights) < 1e-10


@pytest.mark.full  # CNN training steps
def test_manual_step_trains_the_cnn_with_the_same_dropout_masks_as_the_tape_step():
    tape_weights, manual_weights = train_twice("mnist_cnn", steps=3, masked=True)
    assert max_rel_difference(tape_weights, manual_weights) < 1e-10


def test_manual_step_with_an_unrotated_conv_kernel_trains_differently(monkeypatch):
    """The comparison above can fail: dx computed with K not rotated by 180° changes conv1's first update."""
    def backward(self, dout):
        kh, kw = self.K.shape[:2]
        dK = tf.nn.conv2d(tf.transpose(self.xp, (3, 1, 2, 0)), tf.transpose(dout, (1, 2, 0, 3)), 1, "VALID")
        self.grads = {"kernel": tf.transpose(dK, (1, 2, 0, 3)), "bias": tf.reduce_sum(dout, axis=(0, 1, 2))}
        padded = tf.pad(dout, [[0, 0], [kh - 1, kh - 1], [kw - 1, kw - 1], [0, 0]])
        return tf.nn.conv2d(padded, tf.transpose(self.K, (0, 1, 3, 2)), 1, "VALID")  # no [::-1, ::-1]

    monkeypatch.setattr(conv.Conv2D, "backward", backward)
    tape_weights, manual_weights = train_twice("mnist_cnn", steps=1, masked=True)
    assert max_rel_difference(tape_weights[:2], manual_weights[:2]) > 1e-4  # conv1's kernel and bias
    assert max_rel_difference(tape_weights[2:], manual_weights[2:]) < 1e-10  # later layers: dx is not used there


def test_cnn_forward_flops_are_the_hand_counted_multiply_adds():
    # 2 × (output positions × kernel volume × output channels), 2 × (fan in × fan out):
    # conv1 26·26·(3·3·1)·32, conv2 24·24·(3·3·32)·32, dense1 4608·128, dense2 128·10
    expected = {"conv1": 2 * 26 * 26 * 9 * 32, "conv2": 2 * 24 * 24 * 288 * 32, "dense1": 2 * 4608 * 128,
                "dense2": 2 * 128 * 10}
    assert forward_flops_per_sample(build_model("mnist_cnn")) == expected
    assert sum(expected.values()) == pytest.approx(12.19e6, rel=1e-3)


@pytest.mark.full  # CNN training steps
def test_the_compiled_manual_step_is_deterministic_run_after_run():
    """Twelve identical short runs of the compiled manual step end at identical weights. Before its update
    waited for the backward, about one run in ten read weights the optimizer had already changed."""
    runs = [train_twice("two_layer_net", steps=3, n=4)[1] for _ in range(12)]
    assert all(max_rel_difference(runs[0], weights) == 0 for weights in runs[1:])
