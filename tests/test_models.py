"""The notes' models: parameter counts worked out by hand, and the 2-2-2 network's weight naming."""
import numpy as np
import pytest

from backprop_suite.models import MODEL_BUILDERS, build_model
from backprop_suite.models.net_222 import net_222_parameters


def test_mnist_cnn_has_the_600810_parameters_of_c003_1_layer_by_layer():
    model = build_model("mnist_cnn")
    # (kernel area · input channels + 1 bias) · filters, and (inputs + 1) · units; 12·12·32 = 4608 after pooling.
    expected = {"conv1": (3 * 3 * 1 + 1) * 32, "conv2": (3 * 3 * 32 + 1) * 32,
                "dense1": (4608 + 1) * 128, "dense2": (128 + 1) * 10}
    assert {layer.name: layer.count_params() for layer in model.layers if layer.count_params()} == expected
    assert model.count_params() == 600_810
    assert model.output_shape == (None, 10)


@pytest.mark.parametrize("n", [1, 10, 50, 100, 256])
def test_two_layer_net_has_795n_plus_10_parameters_c002_1(n):
    assert build_model("two_layer_net", hidden_size=n).count_params() == 795 * n + 10


def test_two_layer_net_with_50_hidden_units_has_39760_parameters_as_the_slides_state():
    assert build_model("two_layer_net", hidden_size=50).count_params() == 39_760


def test_two_layer_net_book_initialisation_draws_every_weight_independently_with_std_0_01_and_zero_biases():
    model = build_model("two_layer_net", weight_init_std=0.01)
    (k1, b1), (k2, b2) = (model.get_layer(name).get_weights() for name in ("affine1", "affine2"))
    assert k1.std() == pytest.approx(0.01, rel=0.03)  # 39,200 draws: the estimate's rel. s.e. is 0.4 %
    assert k2.std() == pytest.approx(0.01, rel=0.15)  # 500 draws: rel. s.e. 3 %
    assert not b1.any() and not b2.any()
    # A shared unseeded Keras initialiser draws the same numbers for both layers: affine2 would repeat affine1.
    assert abs(np.corrcoef(k1.ravel()[:k2.size], k2.ravel())[0, 1]) < 0.2  # independent: |r| ~ 1/√500


@pytest.mark.parametrize("depth, width", [(1, 10), (5, 100), (20, 32)])
def test_deep_mlp_has_one_dense_layer_per_depth_plus_output(depth, width):
    model = build_model("deep_mlp", depth=depth, width=width)
    expected = (784 + 1) * width + (depth - 1) * (width + 1) * width + (width + 1) * 10
    assert model.count_params() == expected
    assert len(model.layers) == depth + 1


def test_deep_mlp_weight_scale_multiplies_the_initial_weights_standard_deviation():
    stds = [build_model("deep_mlp", depth=2, width=200, weight_scale=s).get_layer("hidden2").get_weights()[0].std()
            for s in (1.0, 3.0)]
    assert stds[1] / stds[0] == pytest.approx(3.0, rel=0.03)


@pytest.mark.parametrize("output_activation", ["linear", "sigmoid"])
def test_net_222_forward_follows_the_notes_weight_names(output_activation):
    w = {"w1": 0.1, "w2": -0.2, "w3": 0.3, "w4": 0.4, "w5": -0.5, "w6": 0.6, "w7": 0.7, "w8": -0.8,
         "b1": 0.01, "b2": -0.02, "b3": 0.03, "b4": 0.04}
    x1, x2 = 0.5, -1.5
    model = build_model("net_222", output_activation=output_activation, parameters=w, dtype="float64")

    def sigmoid(v):
        return 1 / (1 + np.exp(-v))

    # The note's equations, written out by hand (C000-1).
    z1 = sigmoid(w["w1"] * x1 + w["w2"] * x2 + w["b1"])
    z2 = sigmoid(w["w3"] * x1 + w["w4"] * x2 + w["b2"])
    p = np.array([w["w5"] * z1 + w["w6"] * z2 + w["b3"], w["w7"] * z1 + w["w8"] * z2 + w["b4"]])
    if output_activation == "sigmoid":
        p = sigmoid(p)
    np.testing.assert_allclose(model(np.array([[x1, x2]])).numpy()[0], p, rtol=1e-12)
    assert net_222_parameters(model) == w


def test_unknown_model_or_option_is_named():
    with pytest.raises(ValueError, match="unknown model 'cnn'.*mnist_cnn"):
        build_model("cnn")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['hiden_size'\]"):
        build_model("two_layer_net", hiden_size=3)
    with pytest.raises(ValueError, match="unknown 2-2-2 parameters"):
        build_model("net_222", parameters={"w9": 1.0})


def test_registry_builds_every_model_with_its_defaults():
    for name in MODEL_BUILDERS:
        assert build_model(name).count_params() > 0
