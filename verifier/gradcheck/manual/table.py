"""Which manual formula stands in for which Keras layer: one table keyed by the Keras layer class.

Each entry turns a configured Keras layer into the manual steps that compute it (a Dense with an
activation is an Affine then the activation), or raises Unsupported naming the option it lacks.
The class must match exactly: a user's subclass of Dense may compute something else, so it gets no
formula rather than a wrong one. Adding a layer is one class in manual/ and one entry here, plus its
mutation test (tests/test_manual_layers.py).
"""
import inspect

import keras
import numpy as np

from gradcheck import keras_internals
from gradcheck.backends import adapter
from gradcheck.keras_graph import mask_arguments
from gradcheck.manual import attention, conv, layers, normalization, recurrent, wrappers


class Unsupported(Exception):
    """A layer, or an option of it, with no manual formula here."""


def _require(condition: bool, option: str):
    if not condition:
        raise Unsupported(option)


def _activation(function) -> list:
    """The steps of a Keras activation function, found by identity: a user's function that shares a name (or
    keras.ops.gelu, whose default differs from keras.activations.gelu's) gets no formula."""
    name = getattr(function, "__name__", repr(function))
    _require(name in layers.ACTIVATIONS and keras.activations.get(name) is function, f"activation {name!r}")
    return [] if name == "linear" else [layers.ACTIVATIONS[name]()]


def _activation_class(function):
    """The manual class of a Keras activation function, for a layer that applies it many times (a recurrent cell)."""
    steps = _activation(function)
    return type(steps[0]) if steps else layers.Identity


def _without_initial_state(layer):
    _require(all(len(node.input_tensors) - len(mask_arguments(node.arguments)) == 1
                 for node in keras_internals.inbound_nodes(layer)), "an initial_state (the formulas start from zeros)")


def _recurrent(layer, training):
    return [_recurrent_step(layer, training)]  # an initial_state and return_state included (manual/recurrent.py)


def _recurrent_step(layer, training):
    _require(type(layer) in (keras.layers.SimpleRNN, keras.layers.LSTM, keras.layers.GRU),
             f"the wrapped {type(layer).__name__}: no manual formula for this layer class")
    cell = layer.cell
    _require(not layer.stateful, "stateful=True")
    _require(not (training and (cell.dropout or cell.recurrent_dropout)),
             "dropout or recurrent_dropout in training (Keras draws its own masks)")
    options = {"return_sequences": layer.return_sequences, "go_backwards": layer.go_backwards,
               "zero_output_for_mask": layer.zero_output_for_mask,  # a Bidirectional sets it with return_sequences
               "return_state": layer.return_state}
    if isinstance(layer, keras.layers.GRU):
        _require(cell.reset_after, "reset_after=False")
    if isinstance(layer, (keras.layers.LSTM, keras.layers.GRU)):
        gated = recurrent.LSTM if isinstance(layer, keras.layers.LSTM) else recurrent.GRU
        return gated(_activation_class(cell.activation), _activation_class(cell.recurrent_activation), **options)
    return recurrent.SimpleRNN(_activation_class(cell.activation), **options)


BIDIRECTIONAL_MERGES = {"concat": lambda: layers.Concatenate(-1), "sum": layers.Add, "ave": layers.Average,
                        "mul": layers.Multiply}  # Keras's merge_mode: the merge layers' own formulas


def _bidirectional(layer, training):
    _without_initial_state(layer)
    _require(not layer.return_state, "return_state=True")
    _require(layer.merge_mode in BIDIRECTIONAL_MERGES, f"merge_mode={layer.merge_mode!r} (two outputs)")
    return [wrappers.Bidirectional(_recurrent_step(layer.forward_layer, training),
                                   _recurrent_step(layer.backward_layer, training),
                                   BIDIRECTIONAL_MERGES[layer.merge_mode](), layer.return_sequences)]


def _multi_head_attention(layer, training):
    _require(not (training and layer.dropout), "dropout in training (Keras draws its own masks)")
    config = layer.get_config()  # public names of its options; a Keras 3 without use_gate has neither option
    _require(not config.get("use_gate") and config.get("sliding_window") is None, "use_gate or sliding_window")
    _require(tuple(layer.attention_axes) == (1,), f"attention_axes={layer.attention_axes} (sequences (B, T, d) only)")
    output_shape = config.get("output_shape")
    _require(np.ndim(output_shape) == 0 or len(output_shape) == 1,
             f"output_shape={output_shape} (one output axis only)")
    _require(not any(getattr(sub, "lora_enabled", False) or getattr(sub, "quantization_mode", None)
                     for sub in _sublayers(layer).values()), "LoRA or quantization")
    calls = {(_attention_roles(node), bool(node.arguments.kwargs.get("use_causal_mask"))) for node in
             keras_internals.inbound_nodes(layer)}
    _require(len(calls) <= 1, "calls that differ in how they pass query, value and key, or in use_causal_mask")
    roles, causal = next(iter(calls), (("query", "value"), False))
    return [attention.MultiHeadAttention(layer.key_dim, causal, roles)]


def _attention_roles(node) -> tuple:
    """The role (query, value or key) of each tensor the call read, in the order the twin passes them (Keras's
    flattened arguments); one tensor in two roles (self-attention) takes them in turn, and the twin sums its
    gradients either way."""
    arguments = node.arguments
    options = sorted(name for name, value in arguments.kwargs.items() if name not in (
        *attention.ROLES, "use_causal_mask", "training") and value is not None and value is not False)
    _require(not options, f"called with {', '.join(options)} (the formula attends without masks and returns the "
                          f"output only)")
    given = dict(zip(attention.ROLES, arguments.args, strict=False)) | {  # args: query, value and perhaps key
        role: tensor for role, tensor in arguments.kwargs.items() if role in attention.ROLES and tensor is not None}
    _require(len(arguments.args) <= 3 and len(given) == len(node.input_tensors) and {"query", "value"} <= set(given)
             and all(len(t.shape) == 3 for t in node.input_tensors),
             "a call other than layer(query, value[, key]) on (batch, steps, features) tensors")
    roles = []
    for tensor in node.input_tensors:
        role = next(role for role, given_tensor in given.items() if given_tensor is tensor)
        del given[role]
        roles.append(role)
    return tuple(roles)


def _time_distributed(layer, training):
    try:
        steps = manual_steps(layer.layer, training)
    except Unsupported as reason:
        raise Unsupported(f"the wrapped {type(layer.layer).__name__}: {reason}") from None
    _require(not (training and any(isinstance(step, layers.Dropout) for step in steps)),
             "a Dropout inside in training (Keras draws a mask per time step)")
    return [wrappers.TimeDistributed(lambda: manual_steps(layer.layer, training))]


def _channels_last(layer):
    _require(getattr(layer, "data_format", "channels_last") == "channels_last", f"data_format={layer.data_format!r}")


def _dense(layer, training):
    return [layers.Dense()] + _activation(layer.activation)


def _conv2d(layer, training):
    _channels_last(layer)
    if layer.groups > 1:
        return [conv.GroupedConv2D(layer.groups, layer.strides, layer.padding, layer.dilation_rate)] + \
            _activation(layer.activation)
    return [conv.Conv2D(layer.strides, layer.padding, layer.dilation_rate)] + _activation(layer.activation)


def _depthwise_conv2d(layer, training):
    _channels_last(layer)
    return [conv.DepthwiseConv2D(layer.strides, layer.padding, layer.dilation_rate)] + _activation(layer.activation)


def _separable_conv2d(layer, training):
    # Keras computes it as a depthwise convolution (no bias) then a 1×1 convolution with the bias
    _channels_last(layer)
    return [conv.Renamed(conv.DepthwiseConv2D(layer.strides, layer.padding, layer.dilation_rate),
                         {"depthwise_kernel": "kernel"}),
            conv.Renamed(conv.Conv2D(), {"pointwise_kernel": "kernel", "bias": "bias"})] + _activation(layer.activation)


def _conv2d_transpose(layer, training):
    _channels_last(layer)
    _require(layer.output_padding is None, f"output_padding={layer.output_padding}")
    _require(tuple(layer.dilation_rate) == (1, 1), f"dilation_rate={layer.dilation_rate}")
    return [conv.Conv2DTranspose(layer.strides, layer.padding)] + _activation(layer.activation)


def _conv1d(layer, training):
    _channels_last(layer)
    _require(layer.groups == 1, f"groups={layer.groups}")
    _require(layer.padding != "causal", "padding='causal'")
    conv2d = conv.Conv2D((1, *layer.strides), layer.padding, (1, *layer.dilation_rate))
    return [conv.OnARow(conv2d)] + _activation(layer.activation)


def _pooling(manual_class):
    def steps(layer, training):
        _channels_last(layer)
        if len(layer.pool_size) == 1:  # MaxPooling1D, AveragePooling1D: the 2-D pool on a row
            return [conv.OnARow(manual_class((1, *layer.pool_size), (1, *layer.strides), layer.padding))]
        return [manual_class(layer.pool_size, layer.strides, layer.padding)]
    return steps


# Where Keras's own forward differs by backend, the layer computes another function there, so it gets no formula
# rather than one for a different function. The formulas are TensorFlow's (and JAX's). worked_examples/cross_backend.py
# names the zoo models this reaches.


def _average_pooling(layer, training):
    differs = adapter().SAME_AVERAGE_POOLING
    _require(not (differs and layer.padding == "same"), f"padding='same' on the {keras.backend.backend()} backend: "
             f"{differs}")
    return _pooling(conv.AveragePooling2D)(layer, training)


def _global_pooling(manual_class, on_a_row=False):
    def steps(layer, training):
        _channels_last(layer)
        return [conv.OnARow(manual_class(layer.keepdims)) if on_a_row else manual_class(layer.keepdims)]
    return steps


def _embedding(layer, training):
    _require(not layer.lora_enabled and getattr(layer, "quantization_mode", None) is None, "LoRA or quantization")
    return [layers.Embedding(layer.mask_zero)]


def _upsampling(layer, training):
    _channels_last(layer)
    _require(layer.interpolation == "nearest", f"interpolation={layer.interpolation!r}")
    return [layers.UpSampling2D(layer.size)]


def _rank(layer) -> int:
    """The rank of the layer's input, from the graph it was called in, else from its build."""
    try:
        return len(layer.input.shape)
    except (AttributeError, ValueError):
        return layer.input_spec.ndim if getattr(layer, "input_spec", None) is not None else \
            len(keras_internals.build_shapes(layer)[0])


def _batch_norm(layer, training):
    _require(layer.axis in (-1, _rank(layer) - 1), f"axis={layer.axis} (only the last axis)")
    _require(not getattr(layer, "renorm", False), "renorm=True")
    return [normalization.BatchNormalization(layer.epsilon, training and layer.trainable)]  # Keras: frozen BN infers


def _layer_norm(layer, training):
    rank = _rank(layer)
    axes = sorted(a % rank for a in ([layer.axis] if isinstance(layer.axis, int) else layer.axis))
    _require(axes == list(range(rank - len(axes), rank)), f"axis={layer.axis} (only trailing axes)")
    _require(not layer.rms_scaling, "rms_scaling=True")
    return [normalization.LayerNormalization(axes, layer.epsilon)]


def _feature_standardization(layer, training):
    # Its statistics are tensors the layer computes from its variables (finalize_state), not weights of its own: read
    # here, when the twin is made for this copy of the model.
    return [normalization.FeatureStandardization(layer.mean, layer.variance, layer.invert)]


def _relu_layer(layer, training):
    # Keras computes ReLU(max_value=6) by relu6 and ReLU(negative_slope=s) by leaky_relu; other combinations by a
    # composite whose kinks sit elsewhere (at the threshold its gradient is 0 on either side's slope).
    _require(layer.threshold == 0, f"threshold={layer.threshold}")
    _require(layer.max_value in (None, 6) and (layer.max_value is None or layer.negative_slope == 0),
             f"max_value={layer.max_value}" + (f" with negative_slope={layer.negative_slope}"
                                                if layer.negative_slope else ""))
    if layer.max_value == 6:
        return [layers.ReLU6()]
    return [layers.LeakyReLU(layer.negative_slope)] if layer.negative_slope else [layers.ReLU()]


def _dot(layer, training):
    _require(not layer.normalize, "normalize=True")
    ranks = {len(tensor.shape) for node in keras_internals.inbound_nodes(layer) for tensor in node.input_tensors}
    _require(ranks <= {2} or ranks <= {3}, f"inputs of rank {sorted(ranks)} (the formula takes two of rank 2 or 3)")
    return [layers.Dot(layer.axes)]


def _rescaling(layer, training):
    _require(np.ndim(layer.scale) == 0 or keras.config.image_data_format() == "channels_last",
             "a per-channel scale with channels_first")
    return [layers.Rescaling(layer.scale, layer.offset)]


def _zero_padding(layer, training):
    _channels_last(layer)
    return [layers.ZeroPadding2D(layer.padding)]


MANUAL_LAYERS = {
    keras.layers.InputLayer: lambda layer, training: [],
    keras.layers.Dense: _dense,
    keras.layers.Conv2D: _conv2d,
    keras.layers.MaxPooling2D: _pooling(conv.MaxPooling2D),
    keras.layers.AveragePooling2D: _average_pooling,
    keras.layers.GlobalAveragePooling2D: _global_pooling(conv.GlobalAveragePooling2D),
    keras.layers.GlobalMaxPooling2D: _global_pooling(conv.GlobalMaxPooling2D),
    keras.layers.BatchNormalization: _batch_norm,
    keras.layers.LayerNormalization: _layer_norm,
    keras.layers.Normalization: _feature_standardization,
    keras.layers.Activation: lambda layer, training: _activation(layer.activation),
    keras.layers.ReLU: _relu_layer,
    keras.layers.Softmax: lambda layer, training: [layers.Softmax(layer.axis)],
    keras.layers.Dropout: lambda layer, training: [layers.Dropout(layer.rate)],
    keras.layers.Flatten: lambda layer, training: (_channels_last(layer), [layers.Reshape()])[1],
    keras.layers.Reshape: lambda layer, training: [layers.Reshape(layer.target_shape)],
    keras.layers.ZeroPadding2D: _zero_padding,
    keras.layers.Rescaling: _rescaling,
    keras.layers.Add: lambda layer, training: [layers.Add()],
    keras.layers.Concatenate: lambda layer, training: [layers.Concatenate(layer.axis)],
    keras.layers.Subtract: lambda layer, training: [layers.Subtract()],
    keras.layers.Average: lambda layer, training: [layers.Average()],
    keras.layers.Multiply: lambda layer, training: [layers.Multiply()],
    keras.layers.Maximum: lambda layer, training: [layers.Maximum()],
    keras.layers.Dot: _dot,
    keras.layers.Minimum: lambda layer, training: [layers.Minimum()],
    keras.layers.LeakyReLU: lambda layer, training: [layers.LeakyReLU(layer.negative_slope)],
    keras.layers.ELU: lambda layer, training: [layers.ELU(layer.alpha)],
    keras.layers.PReLU: lambda layer, training: [layers.PReLU()],
    keras.layers.Embedding: _embedding,
    keras.layers.Conv1D: _conv1d,
    keras.layers.Conv2DTranspose: _conv2d_transpose,
    keras.layers.DepthwiseConv2D: _depthwise_conv2d,
    keras.layers.SeparableConv2D: _separable_conv2d,
    keras.layers.MaxPooling1D: _pooling(conv.MaxPooling2D),
    keras.layers.AveragePooling1D: _average_pooling,
    keras.layers.GlobalAveragePooling1D: _global_pooling(conv.GlobalAveragePooling1D),
    keras.layers.GlobalMaxPooling1D: _global_pooling(conv.GlobalMaxPooling2D, on_a_row=True),
    keras.layers.UpSampling2D: _upsampling,
    keras.layers.SimpleRNN: _recurrent,
    keras.layers.LSTM: _recurrent,
    keras.layers.GRU: _recurrent,
    keras.layers.Cropping2D: lambda layer, training: (_channels_last(layer), [layers.Cropping2D(layer.cropping)])[1],
    keras.layers.Bidirectional: _bidirectional,
    keras.layers.TimeDistributed: _time_distributed,
    keras.layers.MultiHeadAttention: _multi_head_attention,
    keras.layers.Masking: lambda layer, training: [layers.Masking(layer.mask_value)],
    keras.layers.RepeatVector: lambda layer, training: [layers.RepeatVector(layer.n)],
    # keras.applications' own layers (ConvNeXt, InceptionResNetV2): Keras's classes, not a user's
    keras_internals.LayerScale:
        lambda layer, training: [conv.Renamed(layers.LayerScale(), {layer.gamma.name: "gamma"})],
    keras_internals.CustomScaleLayer: lambda layer, training: [layers.ScaledSum(layer.scale)],
}


# The keras.ops operations a Functional model records as nodes of their own (`x + y`, `x * y`, ops.subtract(x, y)):
# the merge layers' formulas, when both operands are tensors of the graph.
MANUAL_OPERATIONS = {keras_internals.Add: layers.Add, keras_internals.Subtract: layers.Subtract,
                     keras_internals.Multiply: layers.Multiply}


def manual_steps(layer, training: bool, arguments=None) -> list:
    """The manual steps computing `layer` (or a keras.ops operation in a Functional graph, called with `arguments`,
    Keras's SymbolicArguments); Unsupported if its class or an option has no formula here."""
    if not isinstance(layer, keras.Layer):
        merge = MANUAL_OPERATIONS.get(type(layer))
        _require(merge is not None, "no manual formula for this keras.ops operation")
        operands = getattr(arguments, "args", ())
        tensors = [isinstance(a, keras.KerasTensor) for a in operands]
        _require(len(operands) == 2 and any(tensors) and not getattr(arguments, "kwargs", None)
                 and all(t or np.ndim(a) == 0 and isinstance(a, (int, float, np.number))
                         for t, a in zip(tensors, operands, strict=True)),
                 "a keras.ops operation of operands the formulas do not take (two tensors, or a tensor and a number)")
        if all(tensors):
            return [merge()]
        return [layers.WithConstant(merge, float(operands[tensors.index(False)]), tensor_first=tensors[0])]
    factory = MANUAL_LAYERS.get(type(layer))
    if factory is None:
        raise Unsupported("no manual formula for this layer class")
    return factory(layer, training)


def output_masked(layer, steps: list, inputs_masked: list[bool]) -> bool:
    """Whether the layer's output carries a Keras mask (the 0/1 mask over a sequence's steps that
    Embedding(mask_zero=True) and Masking make), given which of its inputs do: made, followed, passed on or dropped as
    Keras does it. A layer whose formula follows masks says so (manual/layers.py); any other that a mask reaches must
    be one whose call cannot read it (no mask argument) and whose mask Keras's default passes on (kept if it supports
    masking, else dropped); Unsupported otherwise (a BatchNormalization's statistics, a Softmax, attention and merges
    compute with masks)."""
    if type(layer) is keras.layers.Masking or type(layer) is keras.layers.Embedding and layer.mask_zero:
        return True
    if not any(inputs_masked):
        return False
    if len(steps) == 1 and steps[0].follows_masks:
        return bool(getattr(layer, "return_sequences", False))  # a recurrent layer's sequence keeps it, a pooling not
    reads_masks = any(name.endswith("mask") for name in inspect.signature(layer.call).parameters)
    _require(len(inputs_masked) == 1 and not reads_masks and type(layer).compute_mask is keras.Layer.compute_mask,
             "a Keras mask (from Embedding(mask_zero=True) or Masking) reaches it, and Keras computes this layer with "
             "the mask, which no formula here follows")
    return layer.supports_masking


def _sublayers(layer) -> dict:
    """{role: sublayer} of a layer made of layers that name their weights alike."""
    if type(layer) is keras.layers.Bidirectional:
        return dict(zip(wrappers.DIRECTIONS, (layer.forward_layer, layer.backward_layer), strict=True))
    if type(layer) is keras.layers.MultiHeadAttention:
        return dict(zip(attention.PROJECTIONS, (layer.query_dense, layer.key_dense, layer.value_dense,
                                                layer.output_dense), strict=True))
    return {}


def weights_by_name(layer) -> dict:
    """The layer's variables by the names its steps read them by: their own names, but where sublayers name theirs
    alike (a Bidirectional's two directions, attention's four projections), "<role>/<name>": "forward/kernel",
    "query/bias", ..."""
    if not isinstance(layer, keras.Layer):
        return {}  # a keras.ops operation in a Functional graph holds no weights
    sublayers = _sublayers(layer)
    if sublayers:
        return {f"{role}/{v.name}": v for role, sublayer in sublayers.items() for v in sublayer.weights}
    return {v.name: v for v in layer.weights}
