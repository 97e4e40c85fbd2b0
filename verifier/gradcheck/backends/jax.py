"""JAX: jax.value_and_grad, jax.jvp, jax.jit. float64 needs jax_enable_x64 (JAX otherwise makes every float64 array
float32, silently)."""
import contextlib

import jax
import keras

from gradcheck import keras_internals

REVERSE_MODE, FORWARD_MODE = "jax.value_and_grad", "jax.jvp"
NOT_THE_DERIVATIVE = {}
RIGHT_SLOPE_AT_ZERO = {"leaky_relu"}  # jnp.where(x >= 0, ...): the slope 1 at 0
FIRST_INPUTS_SHARE_OF_A_TIE = 0.5  # half to each of two tied inputs
SAME_AVERAGE_POOLING = None


def enable_float64():
    jax.config.update("jax_enable_x64", True)
    keras_internals.keep_float64_on_jax_and_torch()


def float32_parts(model) -> list[str]:
    """Keras's MultiHeadAttention without dropout calls jax.nn.dot_product_attention, whose softmax runs in float32
    whatever its inputs' dtype (measured: the float64 check then fails by rounding alone; with dropout Keras computes
    the softmax itself, in the model's dtype)."""
    return [f"{layer.name} (MultiHeadAttention without dropout: jax.nn.dot_product_attention's float32 softmax)"
            for layer in keras_internals.sublayers(model)
            if isinstance(layer, keras.layers.MultiHeadAttention) and not layer.dropout]


def variable_storage_in(value, dtype: str):
    return value.astype(dtype)


def not_recorded():
    return contextlib.nullcontext()  # JAX records nothing unless transformed


def devices() -> list[str]:
    return [d.device_kind for d in jax.devices() if d.platform != "cpu"]


def compiled(fn):
    return jax.jit(fn)


def once(fn):
    """Compiled whole even for one call: JAX runs an uncompiled function op by op and compiles each op for each new
    shape (the first check of a small model in a process took seconds so)."""
    return jax.jit(fn)


def value_and_gradients(fn, values: dict, compile: bool, compiled_once):
    return compiled_once(jax.value_and_grad, fn)(values)  # always compiled whole; unused values get zeros


def _jvp_of(fn):
    return lambda point, tangent: jax.jvp(fn, (point,), (tangent,))


def jvp(fn, point: dict, tangent: dict, compiled_once):
    return compiled_once(_jvp_of, fn)(point, tangent)


# jax.jvp refuses a custom gradient that defines only its reverse mode (keras.ops.custom_gradient).
FORWARD_MODE_REFUSALS = (TypeError, RuntimeError, NotImplementedError)
