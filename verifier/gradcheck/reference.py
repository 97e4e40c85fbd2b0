"""The Keras reference: a model's loss computed by Keras's own layers and losses, as a pure function
of the trainable values, so that tape, forward mode, finite differences and the manual twin all
differentiate the same L(w).

Every call runs inside `keras.StatelessScope`: the model's variables are never written (BatchNorm's
moving statistics and dropout's seed state are read, and any update is discarded), and `values`
may replace any trainable variable's value, by the parameter's name (parameters.py).
"""
import keras
from keras import ops

from gradcheck import keras_internals
from gradcheck.dtypes import floatx, is_float
from gradcheck.errors import InputError
from gradcheck.keras_graph import LayerGraph, layer_graph, run_graph
from gradcheck.losses import resolve_losses
from gradcheck.parameters import parameters


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
    if keras_internals.call_takes_training(layer):
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
                  for layer in keras_internals.sublayers(model, include_self=True)
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
        total = total + fn(ops.cast(target, y.dtype) if is_float(target) else target, y)
    for penalty in penalties:
        total = total + penalty
    return total
