"""The step's op profile: op times read from TensorFlow's real profiler trace, sorted into products and the rest,
each owned by the Keras layer that made it; the shares of the limit checked on hand-worked numbers."""
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from backprop_suite import op_profile
from backprop_suite.steps import tape_step


@pytest.mark.parametrize("op_type, kind", [
    # op types as the oneDNN build of TensorFlow 2.21 names them in the C003-1 CNN's trace
    ("_MklNativeFusedConv2D", "product"), ("_MklNativeConv2DBackpropFilterWithBias", "product"),
    ("_MklNativeConv2DBackpropInput", "product"), ("_MklMatMul", "product"), ("_MklNativeFusedMatMul", "product"),
    ("MatMul", "product"), ("ReluGrad", "other"), ("_MklNativeMaxPoolGrad", "other"),
    ("StatelessRandomUniformV2", "other"), ("AssignSubVariableOp", "other"),
])
def test_products_are_the_convolutions_and_matrix_products_forward_and_backward(op_type, kind):
    assert op_profile.op_kind(op_type) == kind


@pytest.mark.parametrize("op_name, owner", [
    ("gradient_tape/mnist_cnn_1/conv2_1/convolution/Conv2DBackpropFilter", ("conv2", "backward")),
    ("mnist_cnn_1/dropout1_1/stateless_dropout/stateless_random_uniform/StatelessRandomUniformV2",
     ("dropout1", "forward")),
    ("mnist_cnn_1/dense2_1/MatMul", ("dense2", "forward")),
    ("adam/Sub_18", ("adam", "forward")),  # the optimizer's update: no layer owns it
])
def test_an_op_belongs_to_the_layer_whose_scope_holds_it(op_name, owner):
    layers = {"conv1", "conv2", "pool", "dropout1", "flatten", "dense1", "dropout2", "dense2"}
    assert op_profile.op_owner(op_name, layers) == owner


def test_the_traced_times_are_milliseconds_per_call_of_each_op():
    a = tf.random.stateless_normal((768, 768), (1, 2))
    chain = tf.function(lambda: tf.reduce_sum(tf.nn.relu(tf.matmul(a, a))))  # one dependent op after another
    chain().numpy()
    start = time.perf_counter()
    for _ in range(10):
        chain().numpy()
    call_ms = (time.perf_counter() - start) / 10 * 1e3
    times = op_profile.traced_op_times(lambda: chain().numpy(), calls=10)
    [matmul] = [op for op in times.values() if op_profile.op_kind(op["type"]) == "product"]
    assert {"Relu", "Sum"} <= {op["type"] for op in times.values()}
    # The product dominates the call (2·768³ FLOPs against 768² for each other op), and the ops, which run one
    # after another, fit inside it: a wrong unit (the trace counts picoseconds) would miss both by 1000×.
    assert 0.2 * call_ms < matmul["ms"] < 2 * call_ms
    assert sum(op["ms"] for op in times.values()) < 2 * call_ms


def test_a_keras_training_step_profile_finds_each_dense_layers_products():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(256, activation="relu", name="hidden"),
                              keras.layers.Dense(10, activation="softmax", name="out")])
    step = tape_step(model, keras.optimizers.SGD(0.1))
    x, t = tf.random.stateless_normal((32, 64), (0, 1)), tf.one_hot(tf.range(32) % 10, 10)
    float(step(x, t))
    times = op_profile.traced_op_times(lambda: float(step(x, t)), calls=5)
    summary = op_profile.summarise_step(times, model, batch_size=32, step_ms=1.0, matmul_flops_per_second=1e9)
    # The forward product and, from the tape, the kernel's gradient; the gradient with respect to the input
    # too, except for the first layer, whose input is data (the compiled step prunes that product).
    directions = {layer: sorted(p["direction"] for p in summary["products"] if p["layer"] == layer)
                  for layer in ("hidden", "out")}
    assert directions == {"hidden": ["backward", "forward"], "out": ["backward", "backward", "forward"]}
    assert summary["ops_ms"] == pytest.approx(sum(op["ms"] for op in times.values()))


def test_layer_names_a_trace_would_confuse_are_refused():
    # Keras's default names in a fresh process: in a traced step the first layer's scope is "dense_1", the
    # second's "dense_1_2".
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="dense"),
                              keras.layers.Dense(2, name="dense_1")])
    with pytest.raises(ValueError, match="'dense' and 'dense_1'"):
        op_profile.summarise_step({}, model, batch_size=1, step_ms=1.0, matmul_flops_per_second=1e9)


def test_a_trace_without_products_is_refused():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="dense")])
    with pytest.raises(ValueError, match="no convolution or matrix product"):
        op_profile.summarise_step({"sgd/AssignSubVariableOp": {"type": "AssignSubVariableOp", "ms": 0.5}}, model,
                                  batch_size=1, step_ms=1.0, matmul_flops_per_second=1e9)


def test_the_shares_of_the_limit_are_worked_by_hand():
    model = keras.Sequential([keras.Input((100,)), keras.layers.Dense(10, name="dense")])
    # 2·100·10 = 2,000 FLOPs per sample forward; a batch of 50: 100,000 per product, 300,000 per step.
    times = {"dense/MatMul": {"type": "MatMul", "ms": 0.5},
             "gradient_tape/dense/MatMul/MatMul": {"type": "MatMul", "ms": 0.25},
             "gradient_tape/dense/MatMul/MatMul_1": {"type": "MatMul", "ms": 0.25},
             "gradient_tape/dense/Add/Sum": {"type": "Sum", "ms": 0.5},
             "sgd/AssignSubVariableOp": {"type": "AssignSubVariableOp", "ms": 0.5}}
    summary = op_profile.summarise_step(times, model, batch_size=50, step_ms=3.0, matmul_flops_per_second=1e9)
    # At 1 GFLOP/s a product of 100,000 FLOPs takes 0.1 ms: 0.5 ms is 20 % of the limit, 0.25 ms 40 %.
    assert sorted(p["fraction_of_limit"] for p in summary["products"]) == pytest.approx([0.2, 0.4, 0.4])
    assert (summary["products_ms"], summary["other_ms"], summary["ops_ms"]) == pytest.approx((1.0, 1.0, 2.0))
    # The step: 300,000 FLOPs in 3 ms is 0.1 GFLOP/s, 10 %; in the products' 1 ms alone it would be 30 %.
    assert summary["fraction_of_limit"] == pytest.approx(0.1)
    assert summary["fraction_of_limit_if_only_products"] == pytest.approx(0.3)
    assert summary["by_layer"]["dense"] == pytest.approx({"forward_ms": 0.5, "backward_ms": 1.0})
    assert summary["by_layer"]["sgd"] == pytest.approx({"forward_ms": 0.5, "backward_ms": 0.0})
    np.testing.assert_equal(list(summary["by_layer"]), ["dense", "sgd"])  # the costliest first
