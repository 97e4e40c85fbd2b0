"""The Keras reference: a model's loss computed by Keras's own layers and losses, as a pure function
of the trainable values, so that tape, forward mode, finite differences and the manual twin all
differentiate the same L(w).

Every call runs inside `keras.StatelessScope`: the model's variables are never written (BatchNorm's
moving statistics and dropout's seed state are read, and any update is discarded), and `values`
may replace any trainable variable's value. Parameters are named "<layer>/<weight>" (e.g.
"conv1/kernel"); a model whose weights cannot be named that way uniquely uses Keras's variable paths.
"""
import contextlib
import dataclasses
import functools
from dataclasses import dataclass, field

import keras
import numpy as np
from keras import ops

from gradcheck import autodiff
from gradcheck.errors import InputError
from gradcheck.keras_graph import LayerGraph, io_names, layer_graph, run_graph


def parameters(model: keras.Model) -> dict[str, keras.Variable]:
    """The trainable variables by "<layer>/<weight>" name, in layer order. A copy made by `with_dtype` has the
    names of its model: a subclassed model's copy builds its unnamed layers anew, and Keras numbers them anew."""
    named = {f"{layer.name}/{v.name}": v for layer in model.layers for v in layer.trainable_weights}
    if len(named) != len(model.trainable_variables) or \
            {id(v) for v in named.values()} != {id(v) for v in model.trainable_variables}:
        named = {v.path: v for v in model.trainable_variables}  # nested or shared weights: Keras's own paths
    names = getattr(model, "_names_of_the_copied_parameters", None)
    return dict(zip(names, named.values(), strict=True)) if names else named


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
    return sorted({layer.name for layer in model._flatten_layers(include_self=False)
                   if layer.compute_dtype != dtype and not isinstance(layer, keras.layers.InputLayer)})


def parts_below_float64(model: keras.Model) -> list[str]:
    """What the model computes in float32 even as a float64 model, by the backend's own kernels: on JAX, Keras's
    MultiHeadAttention without dropout calls jax.nn.dot_product_attention, whose softmax runs in float32 whatever
    its inputs' dtype (measured: the float64 check then fails by rounding alone; with dropout Keras computes the
    softmax itself, in the model's dtype)."""
    if autodiff.BACKEND != "jax":
        return []
    return [f"{layer.name} (MultiHeadAttention without dropout: jax.nn.dot_product_attention's float32 softmax)"
            for layer in model._flatten_layers(include_self=False)
            if isinstance(layer, keras.layers.MultiHeadAttention) and not layer.dropout]


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
                structure = getattr(model, "_inputs_struct", None)  # a model built on a dict of inputs: from a dict
                with _as_if_uncompiled(model):
                    copy = keras.models.clone_model(
                        model, clone_function=functools.partial(_layer_in_dtype, dtype=dtype),
                        input_tensors=keras.tree.pack_sequence_as(structure, inputs) if isinstance(structure, dict)
                        else inputs if len(inputs) > 1 else inputs[0])
            else:
                copy = model.__class__.from_config(model.get_config())
                shapes = list(model._build_shapes_dict.values())  # a subclassed model: built by a call
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
    for layer in copy._flatten_layers(include_self=False):
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
    layers = model._flatten_layers(include_self=True)
    policies = [(layer, layer._dtype_policy) for layer in layers]
    variables = [(v, v._dtype, v._value) for v in model.variables if _is_float(v)]
    try:
        for layer, _ in policies:
            layer._dtype_policy = keras.DTypePolicy(dtype)
        for variable, _, storage in variables:
            variable._value, variable._dtype = autodiff.variable_storage_in(storage, dtype), dtype
        model._cast_in_place_to = dtype
        with floatx(dtype):
            yield model
    finally:
        for variable, kind, storage in variables:
            variable._value, variable._dtype = storage, kind
        for layer, policy in policies:
            layer._dtype_policy = policy
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
        return keras.layers.Lambda(layer.function, output_shape=getattr(layer, "_output_shape", None),
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


# --- losses ---------------------------------------------------------------------------------------

def _half_squared_error(t, y):
    return 0.5 * ops.sum(ops.square(y - t), axis=-1)  # E = ½ Σ_k (y_k − t_k)², the notes' E (C000-1)


# A Keras Loss object's reduction, without sample weights: every "mean" one averages over the remaining entries.
REDUCTIONS = {"sum_over_batch_size": "mean", "mean": "mean", "mean_with_sample_weight": "mean", "sum": "sum"}


@dataclass(frozen=True)
class Loss:
    """One output's loss: per-sample `fn(t, y, **options)`, averaged over every remaining entry (Keras's
    "sum_over_batch_size"), or summed where the Keras loss says reduction="sum". `name` is Keras's function
    name, which the manual twin's table is keyed by."""
    name: str
    fn: object
    options: dict = field(default_factory=dict)
    reduction: str = "mean"
    weight: float = 1.0  # compile(loss_weights=...): fit minimises Σ weight · loss over the outputs

    def __call__(self, t, y):
        per_sample = self.fn(t, y, **self.options)
        reduced = ops.sum(per_sample) if self.reduction == "sum" else ops.mean(per_sample)
        return reduced if self.weight == 1.0 else self.weight * reduced


DEFAULT_LOSS = {"softmax": "categorical_crossentropy", "sigmoid": "binary_crossentropy"}  # else half_squared_error
# A model compiled without a loss (its loss is its layers' add_loss, keras-io's VAE): no term per output. 0·Σy keeps
# the output in the graph, with a zero gradient.
NO_OUTPUT_LOSS = Loss("no_output_loss", lambda t, y: 0.0 * ops.sum(y, axis=-1))


def as_loss(loss) -> Loss:
    """A Loss from a name, a Keras loss object or function, or a callable (y_true, y_pred) -> per-sample loss."""
    if isinstance(loss, Loss):
        return loss
    if loss == "half_squared_error":
        return Loss("half_squared_error", _half_squared_error)
    if isinstance(loss, str):
        try:
            fn = keras.losses.get(loss)
        except ValueError:
            raise InputError(f"loss {loss!r} is not a Keras loss name; give e.g. 'categorical_crossentropy', "
                             "'mse', 'half_squared_error', a keras.losses object or a function") from None
        return Loss(fn.__name__, fn)
    if isinstance(loss, keras.losses.Loss):
        if loss.reduction not in REDUCTIONS:
            raise InputError(f"loss {type(loss).__name__}(reduction={loss.reduction!r}) gives one loss per sample; "
                             "check a scalar loss: reduction='sum_over_batch_size' (Keras's default) or 'sum'")
        reduction = REDUCTIONS[loss.reduction]
        if hasattr(loss, "fn") and hasattr(loss, "_fn_kwargs"):  # keras.losses.CategoricalCrossentropy(...) & co.
            return Loss(loss.fn.__name__, loss.fn, dict(loss._fn_kwargs), reduction)
        return Loss(type(loss).__name__, loss.call, reduction=reduction)  # its own call(), without the float32 cast
    if callable(loss):
        return Loss(getattr(loss, "__name__", "custom"), loss)
    raise InputError(f"loss must be a name, a keras.losses object or a callable; got {type(loss).__name__}")


def output_activation(model: keras.Model, output: int = 0) -> str:
    """The activation that produces the model's output: a layer's `activation`, or a Softmax layer."""
    graph = layer_graph(model)
    if graph is None:
        layer = model.layers[-1] if model.layers else None
    else:
        layer = next(node.layer for node in graph.nodes if graph.outputs[output] in node.outputs)
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", "linear")


def resolve_losses(model: keras.Model, loss=None) -> list[Loss]:
    """One Loss per model output: `loss` (one for all, or a list), else the model's compiled loss with its
    loss_weights, else the one paired with each output's activation (softmax: categorical cross-entropy,
    sigmoid: binary cross-entropy, otherwise ½ squared error)."""
    count = len(model.outputs) if getattr(model, "_nodes_by_depth", None) is not None else 1
    if loss is None and getattr(model, "compiled", False) and getattr(model, "loss", None) is None:
        return [NO_OUTPUT_LOSS] * count  # compiled without a loss: fit minimises model.losses (add_loss) alone
    compiled = loss is None and getattr(model, "loss", None) is not None
    loss = getattr(model, "loss", None) if compiled else loss
    loss = in_model_order(model, loss, "outputs", "loss")
    if isinstance(loss, (list, tuple)):
        if len(loss) != count:
            raise InputError(f"{model.name}: {len(loss)} losses for {count} outputs; give one per output")
        losses = [as_loss(item) for item in loss]
    elif loss is not None:
        losses = [as_loss(loss)] * count
    else:
        return [as_loss(DEFAULT_LOSS.get(output_activation(model, k), "half_squared_error")) for k in range(count)]
    weights = getattr(getattr(model, "_compile_loss", None), "_user_loss_weights", None) if compiled else None
    if weights is None:
        return losses
    weights = in_model_order(model, weights, "outputs", "loss_weights")
    weights = list(weights) if isinstance(weights, (list, tuple)) else [weights] * count
    return [dataclasses.replace(fn, weight=float(w)) for fn, w in zip(losses, weights, strict=True)]


def in_model_order(model: keras.Model, value, side: str, argument: str):
    """`value` with a dict (by input or output name, as Keras reads one) turned into a list in the order of
    model.inputs or model.outputs (`side`), the value itself for a single one; anything else as it is."""
    if not isinstance(value, dict):
        return value
    names = io_names(model, side)
    if names is None:
        raise InputError(f"{argument}: a dict needs a Sequential or Functional model, whose {side} have names; "
                         f"give {model.name}'s {side} as a list")
    if set(value) != set(names):
        raise InputError(f"{argument}: its keys {sorted(value)} are not {model.name}'s {side} ({', '.join(names)}); "
                         f"give one entry per {side[:-1]}, keyed by its name")
    ordered = [value[name] for name in names]
    return ordered if len(ordered) > 1 else ordered[0]


# --- the reference loss ---------------------------------------------------------------------------

def as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def takes_dropout_mask(layer) -> bool:
    """Whether a check applies a 0/1 keep-mask in this layer's place: Keras's own Dropout only. A subclass
    (SpatialDropout2D drops whole channels) computes another function; it runs as Keras's layer, its noise fixed
    during the check like any noise layer's (its seed state is read, never advanced)."""
    return type(layer) is keras.layers.Dropout


def mask_shape(layer, batch_size: int) -> tuple:
    """The shape of a Dropout layer's keep-mask: its noise_shape where it has one (None: the output's size there),
    so that the mask is shared along the axes the layer shares it along."""
    shape = (batch_size, *layer.output.shape[1:])
    noise = layer.noise_shape or (None,) * len(shape)
    return tuple(size if n is None else n for size, n in zip(shape, noise, strict=True))


def draw_dropout_masks(layers, batch_size: int, rng) -> dict:
    """{layer name: 0/1 keep-mask} for each Dropout layer that takes one, kept with probability 1 − rate."""
    dropouts = {layer.name: layer for layer in layers if takes_dropout_mask(layer)}  # a layer called twice: one
    return {name: rng.random(mask_shape(layer, batch_size)) >= layer.rate for name, layer in dropouts.items()}


def masks_need_a_graph(model) -> InputError:
    return InputError(f"{model.name}: dropout masks need a Sequential or Functional model; a subclassed model's "
                      "dropout runs with Keras's own seed (fixed during a check): pass dropout_masks=None")


def reference_outputs(model, x, training=False, dropout_masks=None, values=None, graph: LayerGraph | None = None):
    """The model's outputs (a list) by Keras's own layers. Dropout layers named in `dropout_masks` apply
    that 0/1 mask (inverted dropout), the same masks the manual twin is given; other layers run with
    `training`. `values`: {parameter name: value} replacing trainable variables."""
    return _forward(model, x, training, dropout_masks, values, graph)[0]


def _forward(model, x, training, dropout_masks, values, graph=None, adders=None) -> tuple[list, list]:
    """The outputs and the model's penalties (model.losses, as Keras's fit adds them to the loss): each trainable
    weight's regularizer at its value here, and every loss the layers add while called (activity regularizers,
    already divided by the batch size, and a user's add_loss). `adders`, a list: the names of the layers whose
    own add_loss added a loss are appended to it."""
    named = parameters(model)
    mapping = [(named[name], value) for name, value in (values or {}).items()]
    graph = graph or layer_graph(model)
    added = {}  # id -> loss: kept as each layer adds it, since Keras clears a layer's losses when called anew
    # floatx as the model computes: a layer that draws keras.random.normal(shape) without a dtype (keras-io's VAE
    # Sampling) draws in floatx, and a float32 draw in a float64 copy would fail or round.
    with floatx(model.compute_dtype), keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:

        def collect_added():
            added.update((id(loss), loss) for loss in scope.losses)

        if graph is None:
            if dropout_masks:
                raise masks_need_a_graph(model)
            outputs = as_list(model(x, training=training))
        else:
            def call_node(node, args, kwargs):
                before = len(added)
                result = call_layer(node.layer, args, kwargs, training, dropout_masks)
                collect_added()
                if adders is not None and len(added) > before and \
                        getattr(node.layer, "activity_regularizer", None) is None:
                    adders.append(node.layer.name)
                return result

            outputs = run_graph(graph, as_list(x), call_node)
        before = len(added)
        collect_added()
        if adders is not None and graph is None and len(added) > before:
            adders.append(model.name)
        penalties = [_weight_penalty(model, name, v) for name, v in named.items() if v.regularizer is not None]
    return outputs, [ops.sum(loss) for loss in added.values()] + penalties


def call_layer(layer, args, kwargs, training: bool, dropout_masks: dict | None):
    """One layer call as every check computes it: a Dropout named in `dropout_masks` applies that 0/1 mask (inverted
    dropout), any other layer runs with `training` where its call takes it."""
    mask = (dropout_masks or {}).get(layer.name) if takes_dropout_mask(layer) else None
    if mask is not None:
        return args[0] * ops.cast(mask, args[0].dtype) / (1 - layer.rate)
    if getattr(layer, "_call_has_training_arg", False):
        kwargs = {**kwargs, "training": training}
    return layer(*args, **kwargs)


def _weight_penalty(model, name: str, variable):
    try:
        return variable.regularizer(variable.value)
    except Exception as error:  # e.g. Keras's OrthogonalRegularizer multiplies by a float32 factor on TensorFlow
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise InputError(f"{model.name}: its {type(variable.regularizer).__name__} penalty on {name} cannot "
                         f"be computed in {variable.dtype} ({type(error).__name__}: {reason}); check a copy without "
                         "it (kernel_regularizer=None), or write the regularizer to cast its constants to the "
                         "weight's dtype (ops.cast(factor, x.dtype))") from None


def penalty_terms(model, x=None, training=False, dropout_masks=None) -> list[str]:
    """The terms of model.losses, named: "<weight path> <Regularizer>", "<layer> activity <Regularizer>" and, given
    the batch x (a forward finds them), "<layer> add_loss" for a layer's own add_loss."""
    weights = [f"{name} {type(v.regularizer).__name__}" for name, v in parameters(model).items()
               if v.regularizer is not None]
    activities = [f"{layer.name} activity {type(layer.activity_regularizer).__name__}"
                  for layer in model._flatten_layers(include_self=True)
                  if getattr(layer, "activity_regularizer", None) is not None]
    adders = []
    if x is not None:
        _forward(model, x, training, dropout_masks, None, adders=adders)
    return weights + activities + [f"{name} add_loss" for name in dict.fromkeys(adders)]


def reference_loss(model, x, t, dropout_masks=None, loss=None, training=False, values=None, losses=None):
    """Σ over outputs of each output's loss, averaged over the batch, by Keras's layers and losses, plus the
    model's penalties (model.losses), as Keras's fit minimises it."""
    losses = losses or resolve_losses(model, loss)
    outputs, penalties = _forward(model, x, training, dropout_masks, values)
    targets = as_list(t)
    if len(targets) != len(outputs):
        raise InputError(f"{model.name}: {len(targets)} target arrays for {len(outputs)} outputs")
    total = 0
    for fn, target, y in zip(losses, targets, outputs, strict=True):
        total = total + fn(ops.cast(target, y.dtype) if _is_float(target) else target, y)
    for penalty in penalties:
        total = total + penalty
    return total


def _is_float(array) -> bool:
    return "float" in keras.backend.standardize_dtype(getattr(array, "dtype", "float64"))
