"""The model a check evaluates in float64: the model itself where it already computes in it, else a copy with the same
weights (cloned, or rebuilt from its config), or the model cast in place for the length of a check where no copy can
be made; and Keras's global dtype settings, set for a block and restored."""
import contextlib
import functools

import keras
import numpy as np
from keras import ops

from gradcheck import autodiff, keras_internals
from gradcheck.errors import InputError
from gradcheck.keras_graph import layer_graph
from gradcheck.parameters import parameters

BUILD_IT_YOURSELF = ("build the model in {dtype} yourself (keras.config.set_floatx('{dtype}') and "
                     "keras.config.set_dtype_policy('{dtype}') before building, and Inputs of dtype '{dtype}') and "
                     "check that one: a model already in {dtype} is checked as it is")


def computes_in(model: keras.Model, dtype: str) -> bool:
    """Whether the model already computes in `dtype`: every layer's compute dtype, float variable and float
    symbolic input (Keras casts data to an Input's dtype first); or it is cast in place to `dtype` (cast_in_place)."""
    if getattr(model, "_cast_in_place_to", None) == dtype:
        return True
    tensors = [*model.variables, *(model.inputs if layer_graph(model) is not None else [])]
    return not _layers_computing_otherwise(model, dtype) and \
        all(t.dtype == dtype for t in tensors if "float" in keras.backend.standardize_dtype(t.dtype))


def _layers_computing_otherwise(model: keras.Model, dtype: str) -> list[str]:
    """The model's layers, nested ones included, whose compute dtype is not `dtype` (an InputLayer computes nothing:
    its tensor's dtype is the input's, checked apart)."""
    return sorted({layer.name for layer in keras_internals.sublayers(model)
                   if layer.compute_dtype != dtype and not isinstance(layer, keras.layers.InputLayer)})


def parts_below_float64(model: keras.Model) -> list[str]:
    """What the model computes in float32 even as a float64 model, by the backend's own kernels (backends/: on JAX,
    MultiHeadAttention's softmax)."""
    return autodiff.float32_parts(model)


def checked_in(model: keras.Model, dtype: str) -> keras.Model:
    """The model a check evaluates in `dtype`: the model itself where it already computes in `dtype` (so one
    that cannot be copied can still be checked; every check's forward runs in a StatelessScope and never writes
    it), else its copy in `dtype`."""
    if dtype == "float64":
        autodiff.enable_float64()
    return model if computes_in(model, dtype) else with_dtype(model, dtype)


def with_dtype(model: keras.Model, dtype: str) -> keras.Model:
    """A copy of the model computing in `dtype`, with the same weights (and seed states) in its own variables."""
    if dtype == "float64":
        autodiff.enable_float64()
    try:
        # The policy is set while cloning too: a container (a nested Sequential, the Functional around it) takes
        # the global one, and a float32 base model inside a float64 copy would compute in float32.
        with global_dtype_policy(dtype):
            if isinstance(model, keras.Sequential) or layer_graph(model) is not None:
                inputs = [keras.Input(batch_shape=t.shape, dtype=_in_dtype(t.dtype, dtype), name=t.name)
                          for t in model.inputs]
                structure = keras_internals.input_structure(model)  # a model built on a dict of inputs: from a dict
                with _as_if_uncompiled(model):
                    copy = keras.models.clone_model(
                        model, clone_function=functools.partial(_layer_in_dtype, dtype=dtype),
                        input_tensors=keras.tree.pack_sequence_as(structure, inputs) if isinstance(structure, dict)
                        else inputs if len(inputs) > 1 else inputs[0])
            else:
                copy = model.__class__.from_config(model.get_config())
                shapes = keras_internals.build_shapes(model)  # a subclassed model: built by a call
                copy(*(np.zeros([1 if n is None else n for n in shape], dtype) for shape in shapes))
    except Exception as error:  # a user's layer without get_config/from_config, or a model that cannot rebuild
        raise InputError(f"{model.name}: cannot rebuild this model in {dtype} ({type(error).__name__}: {error}); "
                         f"{BUILD_IT_YOURSELF.format(dtype=dtype)}") from None
    if not computes_in(copy, dtype):
        raise InputError(f"{model.name}: its {dtype} copy still computes in another dtype in "
                         f"{', '.join(_layers_computing_otherwise(copy, dtype)) or 'its weights or inputs'}; "
                         f"{BUILD_IT_YOURSELF.format(dtype=dtype)}")
    # variables: the weights and the seed states of noise layers (GaussianNoise, SpatialDropout2D, ...), so that
    # every copy draws the same noise as the model, and tape and finite differences see one function.
    if len(copy.variables) != len(model.variables):
        raise InputError(f"{model.name}: its {dtype} copy has {len(copy.variables)} variables, not "
                         f"{len(model.variables)}; {BUILD_IT_YOURSELF.format(dtype=dtype)}")
    for source, target in zip(model.variables, copy.variables, strict=True):
        target.assign(ops.cast(source.value, target.dtype))
    for layer in keras_internals.sublayers(copy):
        if hasattr(layer, "finalize_state"):  # as Keras does after loading weights: an adapted Normalization computes
            layer.finalize_state()  # its mean and variance from its variables here, else keeps its build's 0 and 1
    copy._names_of_the_copied_parameters = tuple(parameters(model))  # a tuple: Keras tracks no attribute of it
    return copy


@contextlib.contextmanager
def cast_in_place(model: keras.Model, dtype: str):
    """The model itself computing in `dtype` within the block, for a model whose copy cannot be made (a custom layer
    without get_config, a subclassed model whose __init__ takes no **kwargs): every layer's dtype policy, and every
    float variable's storage and dtype, switched to `dtype` and restored on leaving. The check's forwards read the
    inputs through its own graph runner (never the Inputs' float32 casts) or the layers' own casts to their policy.
    Code of the user's that casts to float32 itself computes below `dtype`; forward and reverse mode then disagree
    beyond float64 rounding, which the report names (`below_float64`)."""
    if dtype == "float64":
        autodiff.enable_float64()
    layers = keras_internals.sublayers(model, include_self=True)
    policies = [(layer, keras_internals.dtype_policy(layer)) for layer in layers]
    variables = [(v, *keras_internals.variable_storage(v)) for v in model.variables if is_float(v)]
    try:
        for layer, _ in policies:
            keras_internals.set_dtype_policy(layer, keras.DTypePolicy(dtype))
        for variable, storage, _ in variables:
            keras_internals.set_variable_storage(variable, autodiff.variable_storage_in(storage, dtype), dtype)
        model._cast_in_place_to = dtype
        with floatx(dtype):
            yield model
    finally:
        for variable, storage, kind in variables:
            keras_internals.set_variable_storage(variable, storage, kind)
        for layer, policy in policies:
            keras_internals.set_dtype_policy(layer, policy)
        model._cast_in_place_to = None


@contextlib.contextmanager
def _as_if_uncompiled(model: keras.Model):
    """clone_model compiles a compiled model's copy from its compile config, which cannot rebuild a plain Python loss
    function (keras-io's siamese network): the copy needs no compilation (a check resolves the losses from the model
    itself, resolve_losses), so the model reads as uncompiled while it is cloned."""
    compiled = getattr(model, "compiled", False)
    model.compiled = False
    try:
        yield
    finally:
        model.compiled = compiled


def _in_dtype(tensor_dtype, dtype: str) -> str:
    """`dtype` for a float tensor; an integer one (token ids for an Embedding) keeps its own."""
    return dtype if "float" in keras.backend.standardize_dtype(tensor_dtype) else tensor_dtype


def _layer_in_dtype(layer, dtype):
    if isinstance(layer, keras.Model):  # a nested model: clone it layer by layer too
        return with_dtype(layer, dtype)
    if type(layer) is keras.layers.Lambda:
        # Keras refuses to rebuild a Lambda from its config (its function is serialised code, unsafe to load); the
        # copy of a live model takes the same function object instead.
        config = _config_in_dtype(layer.get_config(), dtype)
        return keras.layers.Lambda(layer.function, output_shape=keras_internals.lambda_output_shape(layer),
                                   mask=layer.mask, arguments=layer.arguments, name=config["name"],
                                   dtype=config["dtype"], trainable=config.get("trainable", True))
    return layer.__class__.from_config(_config_in_dtype(layer.get_config(), dtype))


def _config_in_dtype(config, dtype):
    """A layer's config with every float dtype in it set to `dtype`: its own, and those of the layers it wraps
    (Bidirectional, TimeDistributed), which would otherwise keep computing in float32 inside a float64 copy. Its
    weights' initializers are zeros: the copy's variables all take the model's values next, and a random initializer
    would only cost time (on JAX, a compiled random program per weight shape: most of a small model's check)."""
    if isinstance(config, list):
        return [_config_in_dtype(item, dtype) for item in config]
    if not isinstance(config, dict):
        return config
    return {key: dtype if key == "dtype" and _is_float_policy(value) else
            "zeros" if key.endswith("_initializer") and _is_keras_initializer(value) else
            _config_in_dtype(value, dtype) for key, value in config.items()}


def _is_keras_initializer(value) -> bool:
    """A serialised initializer of Keras's own (a user's may do more than fill a weight once)."""
    return isinstance(value, str) or isinstance(value, dict) and value.get("module") == "keras.initializers"


def _is_float_policy(value) -> bool:
    name = value.get("config", {}).get("name") if isinstance(value, dict) else value  # a serialised DTypePolicy
    return isinstance(name, str) and "float" in name  # float32, mixed_bfloat16, ...; not a lookup's int64


class global_dtype_policy:  # noqa: N801  (used as `with global_dtype_policy(...)`)
    """Keras's global dtype policy set to `dtype` while the block builds layers, restored after; for a float dtype,
    floatx too (the dtype of keras.random draws and of constants that layers make without naming one)."""

    def __init__(self, dtype):
        self.dtype = dtype

    def __enter__(self):
        if self.dtype == "float64":
            autodiff.enable_float64()
        self.previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(self.dtype)
        self.floatx = floatx(self.dtype)
        self.floatx.__enter__()

    def __exit__(self, *exc):
        self.floatx.__exit__(*exc)
        keras.config.set_dtype_policy(self.previous)


FLOATX = ("float16", "bfloat16", "float32", "float64")  # what keras.config.set_floatx takes


@contextlib.contextmanager
def floatx(dtype: str):
    """keras.config.floatx() set to `dtype` (a float dtype; else left as it is) within the block."""
    previous = keras.config.floatx()
    if dtype in FLOATX:
        keras.config.set_floatx(dtype)
    try:
        yield
    finally:
        keras.config.set_floatx(previous)


def is_float(array) -> bool:
    return "float" in keras.backend.standardize_dtype(getattr(array, "dtype", "float64"))
