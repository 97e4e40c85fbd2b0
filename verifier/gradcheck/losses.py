"""The loss a check differentiates, one per model output: the caller's, else the model's compiled loss with its
loss_weights, else the one its output activation pairs with; each a per-sample function and a reduction, as Keras's
fit computes it."""
import dataclasses
from dataclasses import dataclass, field

import keras
from keras import ops

from gradcheck import keras_internals
from gradcheck.errors import InputError
from gradcheck.keras_graph import io_names, layer_graph


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
        options = keras_internals.loss_function_options(loss)
        if options is not None:  # keras.losses.CategoricalCrossentropy(...) & co.
            return Loss(loss.fn.__name__, loss.fn, options, reduction)
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
    count = len(model.outputs) if keras_internals.nodes_by_depth(model) is not None else 1
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
    weights = keras_internals.compiled_loss_weights(model) if compiled else None
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
