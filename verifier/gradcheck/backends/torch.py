"""PyTorch: torch.autograd.grad, torch.func.jvp, eager under no_grad for repeated evaluation."""
import torch
import torch.func

from gradcheck import keras_internals
from gradcheck.backends import TORCH_SAME_AVERAGE_POOLING
from gradcheck.errors import InputError

REVERSE_MODE, FORWARD_MODE = "torch.autograd.grad", "torch.func.jvp"
NOT_THE_DERIVATIVE = {}
RIGHT_SLOPE_AT_ZERO = set()
FIRST_INPUTS_SHARE_OF_A_TIE = 0.5
# A different function, not a wrong gradient: the formulas are TensorFlow's and JAX's, so such a layer gets none.
SAME_AVERAGE_POOLING = TORCH_SAME_AVERAGE_POOLING


def enable_float64():
    keras_internals.keep_float64_on_jax_and_torch()


def float32_parts(model) -> list[str]:
    return []


def variable_storage_in(value, dtype: str):
    return torch.nn.Parameter(value.detach().to(getattr(torch, dtype)), requires_grad=value.requires_grad)


def not_recorded():
    return torch.no_grad()  # PyTorch records every op on a weight: a graph nobody would use


def devices() -> list[str]:
    return [torch.cuda.get_device_name(k) for k in range(torch.cuda.device_count())]


def compiled(fn):
    def without_graph(values):  # torch.compile costs more to compile than finite differences save
        with torch.no_grad():
            return fn(values)
    return without_graph


def once(fn):
    return fn


def value_and_gradients(fn, values: dict, compile: bool, compiled_once):
    leaves = {name: v.detach().clone().requires_grad_(True) for name, v in values.items()}
    value = fn(leaves)
    try:
        grads = torch.autograd.grad(value, list(leaves.values()), allow_unused=True)
    except RuntimeError as error:  # PyTorch's own kernels refusing; a traceback would blame the user's model
        raise InputError(_backward_failed(error)) from None
    return value.detach(), {name: torch.zeros_like(leaf) if grad is None else grad
                            for (name, leaf), grad in zip(leaves.items(), grads, strict=True)}


def _backward_failed(error: RuntimeError) -> str:
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
    known = (" PyTorch's float64 convolution backward on the CPU raises this for a convolution with one filter "
             "under Keras (its slow_conv2d kernel; pytorch/vision#6001 met the same check)."
             if "slow_conv2d" in reason else "")
    return (f"torch.autograd.grad cannot differentiate this model: {reason}.{known} Check the model on the "
            "TensorFlow or JAX backend (KERAS_BACKEND=tensorflow or jax): the check is the same there")


def jvp(fn, point: dict, tangent: dict, compiled_once):
    names = list(point)
    return torch.func.jvp(lambda *values: fn(dict(zip(names, values, strict=True))),
                          tuple(point[n] for n in names), tuple(tangent[n] for n in names))


# torch.func.jvp refuses a custom gradient that defines only its reverse mode (keras.ops.custom_gradient).
FORWARD_MODE_REFUSALS = (TypeError, RuntimeError, NotImplementedError)
