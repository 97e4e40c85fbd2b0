"""The framework's own derivatives of a function of named values: the one module that knows the backend.

`fn(values) -> scalar`, with `values` a {name: tensor} dict. Reverse mode gives every gradient,
forward mode one directional derivative (a JVP), and `compiled` makes fn fast to evaluate many times
(finite differences). Only TensorFlow is wired in (tf.GradientTape and
tf.autodiff.ForwardAccumulator); every other module differentiates through these two functions, so a
backend is added here alone.
"""
import keras

BACKEND = keras.backend.backend()


def _require_tensorflow():
    if BACKEND != "tensorflow":
        from backprop_suite.errors import SuiteError

        raise SuiteError(f"KERAS_BACKEND={BACKEND}: the gradient checks run on TensorFlow for now; "
                         "unset KERAS_BACKEND or set it to tensorflow")
    import tensorflow as tf

    return tf


def compiled(fn):
    """fn(values) compiled once for repeated evaluation at other values of the same shapes (a tf.function)."""
    tf = _require_tensorflow()
    return tf.function(fn, autograph=False)  # plain Python control flow: nothing for AutoGraph to convert


def value_and_gradients(fn, values: dict) -> tuple[object, dict]:
    """fn(values) and its gradient with respect to every value (zeros where the value does not reach fn)."""
    tf = _require_tensorflow()
    values = {name: tf.convert_to_tensor(v) for name, v in values.items()}
    with tf.GradientTape() as tape:
        tape.watch(list(values.values()))
        value = fn(values)
    grads = tape.gradient(value, values, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return value, grads


def jvp(fn, values: dict, tangents: dict) -> tuple[object, object]:
    """fn(values) and its forward-mode directional derivative along `tangents`."""
    tf = _require_tensorflow()
    names = list(values)
    primals = [tf.convert_to_tensor(values[n]) for n in names]
    with tf.autodiff.ForwardAccumulator(primals, [tf.convert_to_tensor(tangents[n], p.dtype)
                                                  for n, p in zip(names, primals, strict=True)]) as accumulator:
        value = fn(dict(zip(names, primals, strict=True)))
    return value, accumulator.jvp(value, unconnected_gradients=tf.UnconnectedGradients.ZERO)
