"""The comparison engine on whole models: the notes' networks pass, and broken backwards FAIL.

A checker that passes a broken formula is the worst defect this suite can have, so each mutation
below must make it fail, at the tensors the mutation actually corrupts and nowhere else.
"""
import json
import zlib

import keras
import matplotlib.image
import numpy as np
import pytest
import tensorflow as tf

from backprop_suite.check_gradients import check_model
from backprop_suite.models import build_model
from backprop_suite.models.net_222 import NET_222_PARAMETERS
from backprop_suite.worked_examples.whole_batch_softmax import WholeBatchSoftmaxWithLoss
from gradcheck.manual import conv, losses
from gradcheck.manual import layers as manual
from gradcheck.methods import DEFAULT_TOLERANCES, FiniteDifferences, compare, directional_check, three_way_check


def cnn_batch(rng, n=2):
    x, t = rng.random((n, 28, 28, 1)), np.eye(10)[rng.integers(0, 10, n)]
    masks = {"dropout1": rng.random((n, 12, 12, 32)) > 0.25, "dropout2": rng.random((n, 128)) > 0.5}
    return x, t, masks


def mlp_batch(rng, n=4, d=784):
    return rng.random((n, d)), np.eye(10)[rng.integers(0, 10, n)], None


def net_222(output_activation="linear"):
    rng = np.random.default_rng(7)
    return build_model("net_222", output_activation=output_activation,
                       parameters={name: rng.uniform(-1, 1) for name in NET_222_PARAMETERS})


def failing_tensors(report, methods="manual_vs_tape"):
    return sorted({c["tensor"] for c in report["comparisons"] if c["methods"] == methods and not c["passed"]})


CASES = {
    "mnist_cnn": lambda rng: (build_model("mnist_cnn"), *cnn_batch(rng)),
    "two_layer_net_sigmoid": lambda rng: (build_model("two_layer_net", hidden_size=20), *mlp_batch(rng)),
    "two_layer_net_relu": lambda rng: (build_model("two_layer_net", hidden_size=20, activation="relu"),
                                       *mlp_batch(rng)),
    "net_222_identity": lambda rng: (net_222(), rng.standard_normal((3, 2)), rng.standard_normal((3, 2)), None),
    "net_222_sigmoid": lambda rng: (net_222("sigmoid"), rng.standard_normal((3, 2)), rng.random((3, 2)), None),
    "deep_mlp_tanh": lambda rng: (build_model("deep_mlp", depth=4, width=16, activation="tanh"), *mlp_batch(rng)),
}
# The sigmoid 2-2-2 network twice: with its fused binary cross-entropy, and with C000-1's ½ squared error,
# which backpropagates through σ′ (not fused).
LOSSES = {"net_222_sigmoid": [None, "half_squared_error"]}


@pytest.mark.any_backend
@pytest.mark.parametrize("case, loss", [(case, loss) for case in CASES for loss in LOSSES.get(case, [None])])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_model_passes_the_three_way_check(case, loss, dtype):
    keras.utils.set_random_seed(0)  # the same Keras initial weights in every run
    model, x, t, masks = CASES[case](np.random.default_rng(0))
    report = three_way_check(model, x, t, masks, dtype=dtype, fd_entries=12, loss=loss)
    assert report["passed"], [c for c in report["comparisons"] if not c["passed"]]
    assert report["manual_loss"] == pytest.approx(report["tape_loss"], rel=1e-12 if dtype == "float64" else 1e-5)


@pytest.mark.any_backend
def test_directional_check_covers_all_600810_cnn_parameters_and_passes():
    model, x, t, masks = CASES["mnist_cnn"](np.random.default_rng(1))
    report = directional_check(model, x, t, masks, directions=3)
    assert report["parameters"] == 600_810 and report["passed"]
    row = report["directions"][0]
    assert row["forward_mode_jvp"] == pytest.approx(row["tape"], rel=1e-9)


def test_mutation_missing_transpose_in_dense_dx_fails_only_upstream_weights(monkeypatch):
    def backward(self, dout):
        self.grads = {"kernel": tf.matmul(self.x, dout, transpose_a=True), "bias": tf.reduce_sum(dout, axis=0)}
        return tf.matmul(dout, self.W)  # should be dout·Wᵀ; W is 2×2 here, so the shapes still fit

    monkeypatch.setattr(manual.Dense, "backward", backward)
    model, x, t, _ = CASES["net_222_identity"](np.random.default_rng(2))
    report = three_way_check(model, x, t, fd_entries=12)
    assert not report["passed"]
    assert failing_tensors(report) == ["hidden/bias", "hidden/kernel"]  # output layer's own grads are still right
    assert failing_tensors(report, "manual_vs_finite_differences") == ["hidden/bias", "hidden/kernel"]


def test_mutation_inverted_relu_mask_fails(monkeypatch):
    monkeypatch.setattr(manual.ReLU, "backward", lambda self, dout: dout * (1 - self.mask))
    model, x, t, _ = CASES["two_layer_net_relu"](np.random.default_rng(3))
    report = three_way_check(model, x, t, fd_entries=12)
    assert failing_tensors(report) == ["affine1/bias", "affine1/kernel"]


def test_mutation_slides_relu_mask_x_lt_0_differs_from_tensorflow_at_exactly_zero_c002_4(monkeypatch):
    model, x, t, _ = CASES["two_layer_net_relu"](np.random.default_rng(4))
    kernel, bias = model.get_layer("affine1").get_weights()
    kernel[:, 0], bias[0] = 0.0, 0.0  # hidden unit 0 has pre-activation exactly 0 for every input
    model.get_layer("affine1").set_weights([kernel, bias])
    assert three_way_check(model, x, t, fd_entries=12)["passed"]  # the book's mask (x <= 0 zeroed) agrees
    # The slide's mask zeroes only x < 0, so it passes the gradient at exactly 0.
    monkeypatch.setattr(manual.ReLU, "forward", lambda self, x: (setattr(self, "mask", tf.cast(x >= 0, x.dtype)),
                                                                         tf.nn.relu(x))[1])
    report = three_way_check(model, x, t, fd_entries=12)
    assert failing_tensors(report) == ["affine1/bias", "affine1/kernel"]
    # Central differences straddle the kink for unit 0's weights: flagged, not miscounted.
    assert any(c["kinks"] for c in report["comparisons"] if c["tensor"] == "affine1/bias")


def test_mutation_conv_dx_without_rotating_the_kernel_fails_conv1(monkeypatch):
    original = conv.Conv2D.backward

    def backward(self, dout):
        original(self, dout)
        kh, kw = self.K.shape[:2]
        padded = tf.pad(dout, [[0, 0], [kh - 1, kh - 1], [kw - 1, kw - 1], [0, 0]])
        return tf.nn.conv2d(padded, tf.transpose(self.K, (0, 1, 3, 2)), strides=1, padding="VALID")  # not rotated

    monkeypatch.setattr(conv.Conv2D, "backward", backward)
    model, x, t, masks = CASES["mnist_cnn"](np.random.default_rng(5))
    report = three_way_check(model, x, t, masks, fd_entries=8)
    assert failing_tensors(report) == ["conv1/bias", "conv1/kernel"]


def test_mutation_whole_batch_softmax_of_c001_3_fails(monkeypatch):
    # The note's softmax, normalised over the whole batch instead of per row.
    monkeypatch.setattr(losses.SoftmaxCrossEntropy, "forward", WholeBatchSoftmaxWithLoss.forward)
    model, x, t, _ = CASES["two_layer_net_sigmoid"](np.random.default_rng(6))
    report = three_way_check(model, x, t, fd_entries=12)
    assert not report["passed"] and report["manual_loss"] != pytest.approx(report["tape_loss"])
    assert failing_tensors(report) == ["affine1/bias", "affine1/kernel", "affine2/bias", "affine2/kernel"]


def test_mutation_dropout_backward_ignoring_the_mask_fails(monkeypatch):
    monkeypatch.setattr(manual.Dropout, "backward", lambda self, dout: dout)
    model, x, t, masks = CASES["mnist_cnn"](np.random.default_rng(8))
    report = three_way_check(model, x, t, masks, fd_entries=8)
    assert failing_tensors(report) == ["conv1/bias", "conv1/kernel", "conv2/bias", "conv2/kernel",
                                       "dense1/bias", "dense1/kernel"]


def test_mutation_sigmoid_derivative_missing_one_minus_y_fails(monkeypatch):
    monkeypatch.setattr(manual.Sigmoid, "backward", lambda self, dout: dout * self.y)
    model, x, t, _ = CASES["net_222_identity"](np.random.default_rng(9))
    assert failing_tensors(three_way_check(model, x, t, fd_entries=12)) == ["hidden/bias", "hidden/kernel"]


def test_check_gradients_writes_json_and_plot_and_prints_a_table(tmp_path, capsys):
    assert check_model("net_222", "float64", tmp_path / "net_222").passed
    printed = capsys.readouterr().out
    assert "hidden/kernel" in printed and "verdict: PASS" in printed
    report = json.loads((tmp_path / "net_222" / "gradcheck.json").read_text())
    assert report["passed"] and report["directional"]["parameters"] == 12 and report["three_way"]["dtype"] == "float64"
    assert matplotlib.image.imread(tmp_path / "net_222" / "gradcheck.png").ndim == 3


def test_a_gradient_of_the_wrong_shape_is_a_failure_not_a_crash():
    # A missing transpose on a non-square weight gives dW the shape of Wᵀ.
    result = compare("affine1/kernel", "manual_vs_tape", np.ones((3, 2)), np.ones((2, 3)), rtol=1e-9, atol=1e-12)
    assert not result.passed and result.max_abs_error == np.inf


def test_kinked_entries_are_excluded_from_the_verdict_but_counted():
    manual, reference = np.array([1.0, 5.0]), np.array([1.0, 0.0])
    assert not compare("t", "m", manual, reference, 1e-5, 1e-7).passed
    kinked = compare("t", "m", manual, reference, 1e-5, 1e-7, kinks=np.array([False, True]))
    assert kinked.passed and kinked.kinks == 1


def loss_with_a_small_kink_and_rounding(jump: float, noise_in_eps: float):
    """L(w) = 1.5 + 0.0028·w + jump·max(w, 0) near w = 0, plus a fixed pseudo-random rounding error per w of up to
    noise_in_eps·eps·|L|: a large model's float64 loss rounds like that (~10 eps seen in the zoo's CIFAR convnet)."""
    eps = np.finfo(np.float64).eps

    def loss_of(w):
        w = float(np.asarray(w).ravel()[0])
        rounding = noise_in_eps * eps * 1.5 * (zlib.crc32(np.float64(w).tobytes()) / 2**32 - 0.5)
        return 1.5 + 0.0028 * w + jump * max(w, 0.0) + rounding
    return loss_of


def test_a_small_kink_under_rounding_is_found_from_the_full_step():
    """Seen in the zoo's CIFAR convnet (weights of seed 350): one-sided slopes 6e-7 apart at a ReLU or max-pool kink,
    the tape on the right one. At steps h/10 and h/100 the loss's rounding moves the slopes by ~1e-7, so the jump was
    taken for noise and the check FAILED a right gradient; at h and h/10 it stands 20× out of the rounding."""
    rtol, atol = DEFAULT_TOLERANCES.finite_differences
    kinked = FiniteDifferences(loss_with_a_small_kink_and_rounding(6e-7, 20), np.zeros(1))
    right_slope = 0.0028 + 6e-7
    assert abs(kinked.central((0,)) - right_slope) > atol + rtol * right_slope  # central differences disagree
    assert kinked.at_kink((0,), right_slope, rtol, atol)
    smooth = FiniteDifferences(loss_with_a_small_kink_and_rounding(0.0, 20), np.zeros(1))  # no kink, same rounding
    assert not smooth.at_kink((0,), right_slope, rtol, atol)  # a wrong gradient stays wrong
