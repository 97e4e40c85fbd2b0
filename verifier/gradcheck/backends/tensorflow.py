"""TensorFlow: tf.GradientTape, tf.autodiff.ForwardAccumulator, tf.function. float64 needs nothing."""
import contextlib

import tensorflow as tf

REVERSE_MODE, FORWARD_MODE = "tf.GradientTape", "tf.autodiff.ForwardAccumulator"
# Where the backend's gradient is not the derivative of the loss Keras computes: Keras computes a categorical
# cross-entropy on a softmax from its logits with tf.nn.softmax_cross_entropy_with_logits, whose registered gradient
# is softmax − t, the derivative only for targets that sum to 1 per row (the derivative is softmax·Σt − t).
NOT_THE_DERIVATIVE = {"categorical_crossentropy": "targets that do not sum to 1 per row"}
# At a kink each backend's autodiff takes a side (measured in tests/test_manual_layers.py): SELU's right slope at 0.
RIGHT_SLOPE_AT_ZERO = {"selu"}
FIRST_INPUTS_SHARE_OF_A_TIE = 1.0  # Maximum/Minimum: the whole gradient to the first of tied inputs
SAME_AVERAGE_POOLING = None  # padding="same" average pooling computes as on JAX


def enable_float64():
    """TensorFlow computes in float64 as asked."""


def float32_parts(model) -> list[str]:
    return []


def variable_storage_in(value, dtype: str):
    return tf.Variable(tf.cast(value, dtype), trainable=value.trainable)


def not_recorded():
    return contextlib.nullcontext()  # a tape records only what it is asked to


def devices() -> list[str]:
    return [tf.config.experimental.get_device_details(d).get("device_name", d.name)
            for d in tf.config.list_physical_devices("GPU")]


def compiled(fn):
    return tf.function(fn, autograph=False)  # plain Python control flow: nothing for AutoGraph to convert


def once(fn):
    return fn


def value_and_gradients(fn, values: dict, compile: bool, compiled_once):
    """By tape; compiled whole (once per fn) when asked: a large model's forward and backward runs several times
    faster compiled (docs/benchmarks.md)."""
    return (compiled_once(_tape_of, fn) if compile else _tape_of(fn))(values)


def _tape_of(fn):
    def value_and_gradients_by_tape(values):
        with tf.GradientTape() as tape:
            tape.watch(list(values.values()))
            value = fn(values)
        return value, tape.gradient(value, values, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return value_and_gradients_by_tape


def jvp(fn, point: dict, tangent: dict, compiled_once):
    """Eager: the ForwardAccumulator cannot pass a recurrent layer's while_loop inside a tf.function, and tracing a
    large model costs more than a check's few calls save."""
    with tf.autodiff.ForwardAccumulator(list(point.values()), [tangent[n] for n in point]) as accumulator:
        value = fn(point)
    return value, accumulator.jvp(value, unconnected_gradients=tf.UnconnectedGradients.ZERO)


FORWARD_MODE_REFUSALS = ()  # TensorFlow's errors are the model's own: raised as they are
