"""One adapter module per Keras backend, the only modules that name one: its autodiff (reverse mode, forward mode,
compiling), float64 on it, and where its derivatives at a kink or its kernels differ from the others'.

Each adapter defines the same names (tensorflow.py is the reference): REVERSE_MODE, FORWARD_MODE, NOT_THE_DERIVATIVE,
RIGHT_SLOPE_AT_ZERO, FIRST_INPUTS_SHARE_OF_A_TIE, SAME_AVERAGE_POOLING, enable_float64, float32_parts,
variable_storage_in, not_recorded, devices, compiled, once, value_and_gradients, jvp. autodiff.py is what the rest
of the verifier calls.
"""
import importlib

import keras

from gradcheck.errors import InputError

BACKENDS = ("tensorflow", "jax", "torch")
# Readable without importing torch (the cross-backend comparison names it from a TensorFlow process).
TORCH_SAME_AVERAGE_POOLING = ("Keras's PyTorch backend pads 'same' average pooling evenly, so the edge windows "
                              "average other entries than on TensorFlow and JAX (keras-team/keras#18452)")


def adapter(backend: str | None = None):
    """The adapter module of `backend` (default: the one Keras runs on)."""
    backend = backend or keras.backend.backend()
    if backend not in BACKENDS:
        raise InputError(f"KERAS_BACKEND={backend}: the gradient checks run on {', '.join(BACKENDS)}; "
                         "set KERAS_BACKEND to one of them")
    return importlib.import_module(f"gradcheck.backends.{backend}")
