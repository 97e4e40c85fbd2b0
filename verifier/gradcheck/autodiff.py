"""The framework's own derivatives of a function of named values, on the backend Keras runs on: what the rest of the
verifier calls. The backends' differences live in backends/, one adapter module each:

| backend    | reverse mode                    | forward mode                    | compiled            |
| ---------- | ------------------------------- | ------------------------------- | ------------------- |
| tensorflow | tf.GradientTape                 | tf.autodiff.ForwardAccumulator  | tf.function         |
| jax        | jax.value_and_grad              | jax.jvp                         | jax.jit             |
| torch      | torch.autograd.grad             | torch.func.jvp                  | eager, no_grad      |

`fn(values) -> scalar`, with `values` a {name: tensor} dict. Reverse mode gives every gradient, forward mode one
directional derivative (a JVP), and `compiled` makes fn fast to evaluate many times (finite differences).

float64 needs `enable_float64()` on JAX and PyTorch: it switches on `jax_enable_x64` (JAX otherwise makes every
float64 array float32, silently) and keeps float64 in Keras's own type promotion, which maps it to float32 on both
(Keras 3.15: ops.mean of a float64 tensor would sum in float32); the gradient checks call it, because they run in
float64.
"""
import functools

import keras

from gradcheck import backends

BACKEND = keras.backend.backend()
BACKENDS = backends.BACKENDS


def _adapter():
    return backends.adapter(BACKEND)  # refuses an unknown backend, naming it, when a check first needs it


def reverse_mode() -> str:
    return _adapter().REVERSE_MODE


def forward_mode() -> str:
    return _adapter().FORWARD_MODE


def not_the_derivative(loss_name: str) -> str | None:
    """Where the backend's registered gradient of a Keras loss is not its derivative: when, else None."""
    return _adapter().NOT_THE_DERIVATIVE.get(loss_name)


def float32_parts(model) -> list[str]:
    """What the model computes in float32 even as a float64 model, by the backend's own kernels (named)."""
    return _adapter().float32_parts(model)


def enable_float64():
    """Let Keras compute in float64 on this backend, for the rest of the process (what a float64 check needs)."""
    _adapter().enable_float64()


def variable_storage_in(value, dtype: str):
    """A Keras variable's backend storage cast to `dtype`, of the kind the backend keeps there: a tf.Variable, a JAX
    array, a torch Parameter (dtypes.cast_in_place swaps it in for the length of a check)."""
    return _adapter().variable_storage_in(value, dtype)


def not_recorded():
    """A block whose computations no autodiff records: the manual formulas run in one."""
    return _adapter().not_recorded()


def devices() -> list[str]:
    """The accelerators the backend computes on, by name ([] for the CPU alone)."""
    return _adapter().devices()


def compiled(fn):
    """fn(values) compiled once for repeated evaluation at other values of the same shapes."""
    return _adapter().compiled(fn)


def once(fn):
    """fn, for a single call: compiled whole on JAX (op by op it compiles each op for each new shape)."""
    return _adapter().once(fn)


def value_and_gradients(fn, values: dict, compile: bool = False) -> tuple[object, dict]:
    """fn(values) and its gradient with respect to every value (zeros where the value does not reach fn).
    compile: on TensorFlow, compiled whole (once per fn), for a large function or one called again; JAX always
    compiles it, PyTorch never."""
    values = {name: keras.ops.convert_to_tensor(v) for name, v in values.items()}
    return _adapter().value_and_gradients(fn, values, compile, _compiled_once)


class ForwardModeUnavailable(Exception):
    """The backend cannot run forward mode through this function (JAX and PyTorch refuse a custom gradient
    that defines only its reverse mode, as keras.ops.custom_gradient does)."""


def jvp(fn, values: dict, tangents: dict) -> tuple[object, object]:
    """fn(values) and its forward-mode directional derivative along `tangents`."""
    adapter = _adapter()
    point = {n: keras.ops.convert_to_tensor(v) for n, v in values.items()}
    tangent = {n: keras.ops.convert_to_tensor(tangents[n], p.dtype) for n, p in point.items()}
    try:
        return adapter.jvp(fn, point, tangent, _compiled_once)
    except adapter.FORWARD_MODE_REFUSALS as error:
        reason = str(error).strip().splitlines()
        raise ForwardModeUnavailable(f"{adapter.FORWARD_MODE}: {reason[0] if reason else type(error).__name__}") \
            from error


# By the function (a bound method: its object and method), so each compiles once. A check compiles three (tape,
# forward mode, manual formulas) and no later check calls them again: a few entries do, and keep few problems alive.
@functools.lru_cache(maxsize=8)
def _compiled_once(transform, fn):
    return compiled(transform(fn))
