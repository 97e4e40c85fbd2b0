"""Every private Keras API the verifier needs, and nothing else: a Keras release that renames one breaks here alone.

Checked on Keras 3.15.1 (TensorFlow 2.21, JAX 0.10.2, PyTorch 2.13); tests/test_verifier_package.py keeps the other
modules off Keras's private names. Each function says what public behaviour it stands for.
"""
from keras.src.applications.convnext import LayerScale  # noqa: F401  (ConvNeXt's per-channel scale, not exported)
from keras.src.applications.inception_resnet_v2 import CustomScaleLayer  # noqa: F401  (InceptionResNetV2's residual)
from keras.src.backend.common.masking import get_keras_mask, set_keras_mask  # noqa: F401  (the mask a tensor carries)
from keras.src.ops import numpy as _ops_numpy

KERAS_VERSIONS_CHECKED = ("3.15.1",)

# The operations a Functional model records for `x + y`, `x - y` and `x * y` between KerasTensors.
Add, Subtract, Multiply = _ops_numpy.Add, _ops_numpy.Subtract, _ops_numpy.Multiply


def sublayers(model, include_self: bool = False) -> list:
    """Every layer inside a model or layer, nested ones included (and itself, if `include_self`); [] for a
    keras.ops operation in a graph."""
    flatten = getattr(model, "_flatten_layers", None)
    return list(flatten(include_self=include_self)) if flatten is not None else []


def nodes_by_depth(model) -> dict | None:
    """A Functional model's graph nodes by depth (0 at the outputs); None for a subclassed model, which has none."""
    return getattr(model, "_nodes_by_depth", None)


def inbound_nodes(layer) -> list:
    """The graph nodes at which a layer was called: its calls' arguments and input tensors."""
    return layer._inbound_nodes


def build_shapes(layer) -> list:
    """The input shapes a layer (or a subclassed model) was built with, by a call or by build()."""
    return list(layer._build_shapes_dict.values())


def made_by(tensor):
    """The operation or layer whose output a KerasTensor is (None: an Input, or not a graph tensor)."""
    history = getattr(tensor, "_keras_history", None)
    return None if history is None else history.operation


def input_structure(model):
    """The structure (a dict, a list) a Functional model was built on, as its caller gives its inputs."""
    return getattr(model, "_inputs_struct", None)


def lambda_output_shape(layer):
    """A Lambda layer's output_shape argument, as given."""
    return getattr(layer, "_output_shape", None)


def loss_function_options(loss) -> dict | None:
    """The keyword arguments a keras.losses object passes to its function (from_logits, label_smoothing, ...);
    None for a Loss subclass with its own call()."""
    return dict(loss._fn_kwargs) if hasattr(loss, "fn") and hasattr(loss, "_fn_kwargs") else None


def compiled_loss_weights(model):
    """compile(loss_weights=...) as given; None if none."""
    return getattr(getattr(model, "_compile_loss", None), "_user_loss_weights", None)


def call_takes_training(layer) -> bool:
    """Whether a layer's call() has a `training` argument (Keras passes it down when it has)."""
    return getattr(layer, "_call_has_training_arg", False)


def dtype_policy(layer):
    """A layer's own dtype policy (the property of the same name resolves a mixed policy's parts)."""
    return layer._dtype_policy


def set_dtype_policy(layer, policy) -> None:
    """Switch a built layer's dtype policy in place (Keras sets it only when a layer is made)."""
    layer._dtype_policy = policy


def variable_storage(variable) -> tuple:
    """(the backend's storage of a Keras variable, its dtype): what a cast in place swaps and restores."""
    return variable._value, variable._dtype


def set_variable_storage(variable, storage, dtype) -> None:
    """Replace a Keras variable's backend storage and dtype without assign()'s cast to the old dtype."""
    variable._value, variable._dtype = storage, dtype


def keep_float64_on_jax_and_torch() -> None:
    """Keras narrows float64 to float32 when x64 is off; once the backend computes in float64, stop it (Keras does
    the same on TensorFlow)."""
    from keras.src.backend.common import dtypes

    dtypes.BIT64_TO_BIT32_DTYPE.pop("float64", None)
