"""keras.applications architectures as Keras builds them (weights=None, 32×32 or their smallest input), checked in
float64 on TensorFlow with every method: the hand-derived formulas, the tape, forward mode and finite differences of
Keras's own forward. Two in the default run; every family with `-m slow`. On JAX and PyTorch every one is in the slow
set (`KERAS_BACKEND=jax pytest -m slow tests/test_applications.py -k MobileNetV3Small`): compiling an ImageNet
architecture's float64 check takes minutes there.

The check point is generic: biases, BatchNormalization's β and moving mean off 0, γ and the moving variance off 1.
At Keras's initial weights a deep network in inference mode can collapse its activations onto ReLU kinks (MobileNetV2:
every input of a late ReLU6 within 3e-10 of 0), where no finite-difference step measures a derivative."""
import keras
import numpy as np
import pytest

from gradcheck import autodiff, check_gradients

pytestmark = pytest.mark.full  # keras.applications architectures, 20-30 s each: scripts/test.sh --all

ARCHITECTURES = {  # name: input size
    "MobileNetV3Small": 32, "EfficientNetB0": 32,  # the default run
    "ResNet50": 32, "ResNet50V2": 32, "DenseNet121": 32, "VGG16": 32, "Xception": 71, "InceptionV3": 75,
    "MobileNet": 32, "MobileNetV2": 32, "MobileNetV3Large": 32, "NASNetMobile": 32, "EfficientNetV2B0": 32,
    "ConvNeXtTiny": 32, "InceptionResNetV2": 75,
}
DEFAULT_RUN = ("MobileNetV3Small", "EfficientNetB0")


def in_the_default_run(name: str) -> bool:
    return name in DEFAULT_RUN and autodiff.BACKEND == "tensorflow"


def at_a_generic_point(model, rng):
    for variable in model.weights:
        name = variable.path.rsplit("/", 1)[-1]
        if name in ("bias", "beta", "moving_mean"):
            variable.assign(rng.normal(0, 0.2, variable.shape))
        elif name in ("gamma", "moving_variance"):
            variable.assign(rng.uniform(0.5, 1.5, variable.shape))
    return model


def build(name: str):
    options = {"include_preprocessing": False} if name.startswith(("MobileNetV3", "EfficientNetV2", "ConvNeXt")) else {}
    size = ARCHITECTURES[name]
    return keras.applications.__dict__[name](input_shape=(size, size, 3), weights=None, classes=3, **options), size


@pytest.mark.any_backend
@pytest.mark.parametrize("name", [pytest.param(name, marks=() if in_the_default_run(name) else pytest.mark.slow)
                                  for name in ARCHITECTURES])
def test_a_keras_application_gets_the_full_check_and_passes(name):
    rng = np.random.default_rng(0)
    model, size = build(name)
    report = check_gradients(at_a_generic_point(model, rng), rng.standard_normal((2, size, size, 3)),
                             np.eye(3)[[0, 2]], directions=2, progress=False)
    assert report.data["three_way"]["manual"]["available"], report.data["three_way"]["manual"]["missing"]
    assert report.passed, report.failure_message()
    rows = [row for row in report.data["layers"]["calls"] if row["checked"]]
    assert rows and all("tape_vs_finite_differences" in row["methods"] for row in rows)
    assert set(report.data["layers"]["covered"]) == {c["tensor"] for c in report.data["three_way"]["comparisons"]}
