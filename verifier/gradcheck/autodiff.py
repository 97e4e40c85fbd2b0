"""The framework's own derivatives of a function of named values: the one module that knows the backend.

`fn(values) -> scalar`, with `values` a {name: tensor} dict. Reverse mode gives every gradient,
forward mode one directional derivative (a JVP), and `compiled` makes fn fast to evaluate many times
(finite differences). Every other module differentiates through these functions, so the differences
between Keras 3's backends live here alone:

| backend    | reverse mode                    | forward mode                    | compiled            |
| ---------- | ------------------------------- | ------------------------------- | ------------------- |
| tensorflow | tf.GradientTape                 | tf.autodiff.ForwardAccumulator  | tf.function         |
| jax        | jax.value_and_grad              | jax.jvp                         | jax.jit             |
| torch      | torch.autograd.grad             | torch.func.jvp                  | eager, no_grad      |

float64 needs `enable_float64()` on JAX and PyTorch: it switches on `jax_enable_x64` (JAX otherwise makes every
float64 array float32, silently) and keeps float64 in Keras's own type promotion, which maps it to float32
on both; the gradient checks call it, because they run in float64.
"""
import contextlib
import functools

import keras

from gradcheck import keras_internals
from gradcheck.errors import InputError

BACKEND = keras.backend.backend()
BACKENDS = ("tensorflow", "jax", "torch")
REVERSE_MODE = {"tensorflow": "tf.GradientTape", "jax": "jax.value_and_grad", "torch": "torch.autograd.grad"}
FORWARD_MODE = {"tensorflow": "tf.autodiff.ForwardAccumulator", "jax": "jax.jvp", "torch": "torch.func.jvp"}
# Where the backend's own gradient is not the derivative of the loss Keras computes. TensorFlow: Keras computes a
# categorical cross-entropy on a softmax from its logits with tf.nn.softmax_cross_entropy_with_logits, whose registered
# gradient is softmax − t, the derivative only for targets that sum to 1 per row (the derivative is softmax·Σt − t).
NOT_THE_DERIVATIVE = {
    "tensorflow": {"categorical_crossentropy": "targets that do not sum to 1 per row"},
    "jax": {}, "torch": {},
}


def enable_float64():
    """Let Keras compute in float64 on this backend, for the rest of the process (what a float64 check needs).

    JAX makes every float64 array float32 unless jax_enable_x64 is on. And Keras 3 (3.15) mimics that on
    JAX and PyTorch in its own type promotion: `keras.backend.result_type` maps float64 to float32, so
    ops.mean of a float64 tensor sums in float32 and a float64 conv meets a float32 operand. Both are
    switched to keep float64; float32 and lower computations are unaffected (TensorFlow needs neither).
    """
    if BACKEND == "tensorflow":
        return
    if BACKEND == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
    keras_internals.keep_float64_on_jax_and_torch()


def variable_storage_in(value, dtype: str):
    """A Keras variable's backend storage (its `_value`) cast to `dtype`, of the kind the backend keeps there: a
    tf.Variable, a JAX array, a torch Parameter (reference.cast_in_place swaps it in for the length of a check)."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.Variable(tf.cast(value, dtype), trainable=value.trainable)
    if BACKEND == "torch":
        import torch

        return torch.nn.Parameter(value.detach().to(getattr(torch, dtype)), requires_grad=value.requires_grad)
    return value.astype(dtype)


def not_recorded():
    """A block whose computations no autodiff records: the manual formulas run in one. (PyTorch records every op
    on a weight, which would build a graph nobody uses; TensorFlow and JAX record only when asked.)"""
    if BACKEND == "torch":
        import torch

        return torch.no_grad()
    return contextlib.nullcontext()


def devices() -> list[str]:
    """The accelerators the backend computes on, by name ([] for the CPU alone)."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return [tf.config.experimental.get_device_details(d).get("device_name", d.name)
                for d in tf.config.list_physical_devices("GPU")]
    if BACKEND == "jax":
        import jax

        return [d.device_kind for d in jax.devices() if d.platform != "cpu"]
    import torch

    return [torch.cuda.get_device_name(k) for k in range(torch.cuda.device_count())]


def compiled(fn):
    """fn(values) compiled once for repeated evaluation at other values of the same shapes."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, autograph=False)  # plain Python control flow: nothing for AutoGraph to convert
    if BACKEND == "jax":
        import jax

        return jax.jit(fn)
    _require_known_backend()
    import torch

    def without_graph(values):  # torch.compile costs more to compile than finite differences save
        with torch.no_grad():
            return fn(values)
    return without_graph


def once(fn):
    """fn, for a single call: compiled whole on JAX, which runs an uncompiled function op by op and compiles each
    op for each new shape (the first check of a small model in a process took seconds so); as it is elsewhere."""
    if BACKEND == "jax":
        import jax

        return jax.jit(fn)
    return fn


def value_and_gradients(fn, values: dict, compile: bool = False) -> tuple[object, dict]:
    """fn(values) and its gradient with respect to every value (zeros where the value does not reach fn).
    compile: on TensorFlow, compiled whole (once per fn), for a large function or one called again (a model's
    forward and backward: 0.8 s compiled against 3 s eager for ResNet50 in float64); JAX always compiles it."""
    values = {name: keras.ops.convert_to_tensor(v) for name, v in values.items()}
    if BACKEND == "tensorflow":
        return (_compiled_once(_tape_of, fn) if compile else _tape_of(fn))(values)
    if BACKEND == "jax":
        import jax

        return _compiled_once(jax.value_and_grad, fn)(values)  # compiled whole (`once`); unused values get zeros
    _require_known_backend()
    import torch

    leaves = {name: v.detach().clone().requires_grad_(True) for name, v in values.items()}
    value = fn(leaves)
    try:
        grads = torch.autograd.grad(value, list(leaves.values()), allow_unused=True)
    except RuntimeError as error:  # PyTorch's own kernels refusing; a traceback would blame the user's model
        raise InputError(_torch_backward_failed(error)) from None
    return value.detach(), {name: torch.zeros_like(leaf) if grad is None else grad
                            for (name, leaf), grad in zip(leaves.items(), grads, strict=True)}


def _tape_of(fn):
    import tensorflow as tf

    def value_and_gradients_by_tape(values):
        with tf.GradientTape() as tape:
            tape.watch(list(values.values()))
            value = fn(values)
        return value, tape.gradient(value, values, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return value_and_gradients_by_tape


def _torch_backward_failed(error: RuntimeError) -> str:
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
    known = (" PyTorch's float64 convolution backward on the CPU raises this for a convolution with one filter "
             "under Keras (its slow_conv2d kernel; pytorch/vision#6001 met the same check)."
             if "slow_conv2d" in reason else "")
    return (f"torch.autograd.grad cannot differentiate this model: {reason}.{known} Check the model on the "
            "TensorFlow or JAX backend (KERAS_BACKEND=tensorflow or jax): the check is the same there")


class ForwardModeUnavailable(Exception):
    """The backend cannot run forward mode through this function (JAX and PyTorch refuse a custom gradient
    that defines only its reverse mode, as keras.ops.custom_gradient does)."""


def jvp(fn, values: dict, tangents: dict) -> tuple[object, object]:
    """fn(values) and its forward-mode directional derivative along `tangents`. Eager on TensorFlow: its
    ForwardAccumulator cannot pass a recurrent layer's while_loop inside a tf.function, and tracing it costs more than
    a check's few calls save (ResNet50: 8.3 s to trace, then 0.8 s a call, against 3 s eager)."""
    try:
        return _jvp(fn, values, tangents)
    except (TypeError, RuntimeError, NotImplementedError) as error:
        if BACKEND == "tensorflow":
            raise
        reason = str(error).strip().splitlines()
        raise ForwardModeUnavailable(f"{FORWARD_MODE[BACKEND]}: {reason[0] if reason else type(error).__name__}") \
            from error


def _jvp(fn, values: dict, tangents: dict) -> tuple[object, object]:
    names = list(values)
    primals = [keras.ops.convert_to_tensor(values[n]) for n in names]
    directions = [keras.ops.convert_to_tensor(tangents[n], p.dtype) for n, p in zip(names, primals, strict=True)]
    if BACKEND in ("tensorflow", "jax"):  # JAX: compiled whole (`once`)
        run = _compiled_once(_jvp_of, fn) if BACKEND == "jax" else _jvp_of(fn)
        return run(dict(zip(names, primals, strict=True)), dict(zip(names, directions, strict=True)))
    _require_known_backend()
    import torch.func

    return torch.func.jvp(lambda *point: fn(dict(zip(names, point, strict=True))), tuple(primals), tuple(directions))


def _jvp_of(fn):
    if BACKEND == "tensorflow":
        import tensorflow as tf

        def jvp_by_accumulator(point, tangent):
            with tf.autodiff.ForwardAccumulator(list(point.values()), [tangent[n] for n in point]) as accumulator:
                value = fn(point)
            return value, accumulator.jvp(value, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return jvp_by_accumulator
    import jax

    return lambda point, tangent: jax.jvp(fn, (point,), (tangent,))


# By the function (a bound method: its object and method), so each compiles once. A check compiles three (tape,
# forward mode, manual formulas) and no later check calls them again: a few entries do, and keep few problems alive.
@functools.lru_cache(maxsize=8)
def _compiled_once(transform, fn):
    return compiled(transform(fn))


def _require_known_backend():
    if BACKEND not in BACKENDS:
        raise InputError(f"KERAS_BACKEND={BACKEND}: the gradient checks run on {', '.join(BACKENDS)}; "
                         "set KERAS_BACKEND to one of them")
