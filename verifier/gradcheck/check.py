"""Check any Keras model's gradients: `check_gradients` returns a report, `assert_gradients` raises.

    from gradcheck import assert_gradients, check_gradients
    report = check_gradients(model, x, y)          # any built Keras model; float64 by default
    print(report)                                  # per-layer and per-tensor tables; report.passed, .save("out/")
    assert_gradients(model, x, y, training=True)   # in a pytest test: AssertionError naming the first failing layer

Three methods: the framework's autodiff (the reference the user trusts), float64 central differences
(derivative-free, kink-aware), forward mode (a second autodiff), and the hand-derived backward where a layer has a
formula in gradcheck/manual/ (otherwise the report names the layers without one). Compared, first, for each
layer call alone at the batch's activations (layer_check.py: a wrong gradient names its layer, at a layer's cost);
then for the whole model: manual against autodiff per weight tensor, central differences of the whole model on the
tensors no layer's check covers (or every tensor, given fd_entries), and random directions over all parameters,
which check the composition (the chain rule across layers, the loss and model.losses).
"""
import contextlib
import dataclasses
import math
import time

import keras
import numpy as np
from keras import ops

from gradcheck import autodiff, kinks
from gradcheck.dtypes import BUILD_IT_YOURSELF, cast_in_place, checked_in, parts_below_float64
from gradcheck.environment import environment
from gradcheck.errors import InputError
from gradcheck.gradient_report import GradientReport
from gradcheck.keras_graph import io_names, layer_graph
from gradcheck.layer_check import check_layers
from gradcheck.losses import NO_OUTPUT_LOSS, in_model_order, resolve_losses
from gradcheck.methods import DEFAULT_TOLERANCES, Tolerances, directional_check, float64_gradients, three_way_check
from gradcheck.reference import as_list, masks_need_a_graph, penalty_terms, reference_outputs, takes_dropout_mask

DTYPES = ("float64", "float32")


def check_gradients(model, x, y, loss=None, dtype: str = "float64", dropout_masks: dict | None = None,
                    training: bool = False, fd_entries: int | None = None, directions: int = 5, seed: int = 0,
                    layers: bool = True, layer_entries: int = 2, progress: bool = True,
                    tolerances: Tolerances | None = None) -> GradientReport:
    """Compare the model's gradients of `loss` on the batch (x, y) three ways: layer by layer, per tensor and along
    directions.

    loss: a Keras loss name or object, a list (one per output), or a callable (y_true, y_pred) -> per-sample
        loss; None: the model's compiled loss, else the one paired with the output activation.
    dtype: of the manual and autodiff gradients ("float64" or "float32"); finite differences are always float64.
    training: check the training-mode function (BatchNormalization on batch statistics; Dropout applies
        `dropout_masks`, {layer name: 0/1 mask}, or masks drawn with `seed`). The model's variables,
        its moving statistics included, are never changed.
    layers: check every layer call alone at the activations the batch gives it (layer_check.py), so that a wrong
        gradient names its layer; layer_entries: entries of each of its weights (and of an input whose random
        direction met a kink) checked there by central differences of the layer alone, besides one random direction
        per input and weight.
    fd_entries: entries per tensor checked by central differences of the whole model; None: 32, for the tensors
        that no layer's own check covers (a subclassed model's: all). directions: random directions over all
        parameters checked by finite differences, and by forward mode (along the first only where every layer's
        forward mode was checked alone).
    progress: show the layer-by-layer progress on stderr (on a terminal, after the first seconds).
    tolerances: a Tolerances (rtol, atol of each comparison, the finite differences' steps); None: the defaults,
        derived in methods.py, e.g. Tolerances(finite_differences=(1e-4, 1e-6), fd_step=1e-5) for a model whose
        loss is noisier than float64 rounding.
    """
    start = time.perf_counter()
    x, y = in_model_order(model, x, "inputs", "x"), in_model_order(model, y, "outputs", "y")
    _validate(model, x, y, dtype, fd_entries, directions, seed, layer_entries)
    tolerances = _validated_tolerances(tolerances)
    _validate_dropout_masks(model, dropout_masks, len(as_list(x)[0]))
    # One copy for both checks (each would make its own), and the model's own loss: Keras re-makes a copy's
    # compiled loss from its config, which loses options (Huber(delta=0.5) comes back with delta=1).
    loss = resolve_losses(model, loss)
    _validate_fit(model, x, y, loss)
    if all(fn is NO_OUTPUT_LOSS for fn in loss) and not penalty_terms(model, x, training, dropout_masks):
        raise InputError(f"{model.name} is compiled without a loss and adds none (add_loss, regularizers): there is "
                         "no loss to differentiate; pass loss=... (--loss NAME), or compile it with one")
    with float64_model(model, dtype) as (model64, cast_in_place_because):
        report = _check(model, model64, x, y, loss, dtype, dropout_masks, training, fd_entries, directions, seed,
                        layer_entries if layers else None, progress, tolerances)
    report.data["cast_in_place"] = cast_in_place_because
    report.data["cost"]["seconds"] = round(time.perf_counter() - start, 2)
    report.data["cost"]["passes"] = round(report.data["cost"]["seconds"] /
                                          report.data["cost"]["forward_backward_seconds"], 1)
    return report


@contextlib.contextmanager
def float64_model(model, dtype: str):
    """(the model a float64 check evaluates, None): the model itself where it computes in float64, else its float64
    copy; where no copy can be made (a custom layer without get_config, ...), (the model itself cast in place to
    float64 for the block, why no copy could be made)."""
    try:
        copy = checked_in(model, "float64")
    except InputError as no_copy:  # checked_in's only errors: the copy cannot be made, or computes otherwise
        said = " ".join(line.strip() for line in str(no_copy).splitlines() if line.strip())
        reason = said.split("; build the model")[0].removeprefix(f"{model.name}: ")
    else:
        yield copy, None  # what the check raises is its own: not taken for a failed copy
        return
    if dtype != "float64":
        raise InputError(f"{model.name}: dtype={dtype!r} compares with a float64 copy of the model, which cannot be "
                         f"made ({reason}); check it with dtype='float64' (the default), which casts it in place")
    try:
        with cast_in_place(model, "float64") as model64:
            yield model64, reason
    except InputError:
        raise
    except Exception as error:  # the user's code does not run in float64 (a constant cast to float32, ...)
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise InputError(f"{model.name}: no float64 copy can be made ({reason}), and the model cast to float64 in "
                         f"place fails ({type(error).__name__}: {first}); {BUILD_IT_YOURSELF.format(dtype='float64')}"
                         ) from None


def _check(model, model64, x, y, loss, dtype, dropout_masks, training, fd_entries, directions, seed,
           layer_entries, progress, tolerances) -> GradientReport:
    computed = float64_gradients(model64, x, y, dropout_masks, seed, loss, training)  # for every check
    _refuse_a_loss_not_finite(model, computed.tape_loss)  # before any check spends time on it
    forward_backward = min(_seconds(computed.problem.tape) for _ in range(2))  # compiled, steady: the cost's unit
    layers = NOT_LAYER_BY_LAYER if layer_entries is None else check_layers(
        model64, computed.problem.x, training, computed.dropout_masks, layer_entries, seed, progress, tolerances)
    fd_tensors = None if fd_entries is not None else \
        [name for name in computed.problem.params if name not in set(layers["covered"])]
    three_way = three_way_check(model64 if dtype == "float64" else model, x, y, dropout_masks, dtype=dtype,
                                fd_entries=fd_entries or FD_ENTRIES, seed=seed, loss=loss, training=training,
                                computed=computed, fd_tensors=fd_tensors, tolerances=tolerances)
    _refuse_a_loss_not_finite(model, three_way["tape_loss"])  # in `dtype`, where it differs from float64
    # Forward mode along one direction of the whole model where every layer's forward mode was checked alone: the
    # composition is checked along every direction by finite differences.
    checked = [row for row in layers["calls"] if row["checked"]]
    every_layer_forward = bool(checked) and all("jvp_vs_tape" in row["methods"] for row in checked)
    directional = directional_check(model64, x, y, dropout_masks, directions=directions, seed=seed, loss=loss,
                                    training=training, computed=computed,
                                    forward_directions=1 if every_layer_forward else None, tolerances=tolerances)
    return GradientReport({
        "model": model.name, "backend": autodiff.BACKEND, "reverse_mode": autodiff.reverse_mode(),
        "parameters": int(sum(np.prod(v.shape) for v in model.trainable_variables)),
        "batch": {"size": len(as_list(x)[0])}, "dtype": dtype, "training": training,
        "dropout_masks": three_way["dropout_masks"], "tolerances": dataclasses.asdict(tolerances), "seed": seed,
        "three_way": three_way, "directional": directional, "environment": environment(),
        "below_float64": parts_below_float64(model) if dtype == "float64" else [],
        "autodiff_not_the_derivative": autodiff_not_the_derivative(y, loss)
        if not _tape_agrees_with_fd(three_way, directional) else [],
        "kinks_crossed": kinks_crossed(computed.problem, three_way, directional), "layers": layers,
        "cost": {"forward_backward_seconds": round(forward_backward, 4)},
        "passed": layers["passed"] and three_way["passed"] and directional["passed"]})


def _refuse_a_loss_not_finite(model, loss: float) -> None:
    if not np.isfinite(loss):
        raise InputError(f"{model.name}: the loss at these weights and this batch is {loss}, so no gradient there can "
                         "be checked; check the targets suit the loss (e.g. 0/1 for a cross-entropy) and the weights "
                         "are finite")


def _seconds(run) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


FD_ENTRIES = 32  # entries per tensor that central differences of the whole model sample, where they run
NOT_LAYER_BY_LAYER = {"available": False, "reason": "layers=False", "calls": [], "passed": True, "covered": [],
                      "first_failure": None}


def kinks_crossed(problem, three_way: dict, directional: dict) -> dict:
    """{layer: its kinks, the nearest of its inputs to one at the point, and how many sampled entries (and directions)
    finite differences could not measure because even their smallest step crosses that layer's kinks}."""
    entries: dict[str, int] = {}
    for c in three_way["comparisons"]:
        if c["methods"] == "tape_vs_finite_differences":
            for layer, count in (c.get("kinks_crossed") or {}).items():
                entries[layer] = entries.get(layer, 0) + count
    for row in directional["directions"]:
        for layer in row.get("kinks_crossed", {}):
            entries[layer] = entries.get(layer, 0) + 1
    if not entries:
        return {}
    points = kinks.kink_points(problem.model)
    nearest = kinks.nearest(points, problem.kinked_inputs(), entries)
    return {layer: {"kinks": list(points[layer]), "nearest": nearest.get(layer), "entries": count}
            for layer, count in sorted(entries.items(), key=lambda item: -item[1])}


def _tape_agrees_with_fd(three_way: dict, directional: dict) -> bool:
    return all(c["passed"] for c in three_way["comparisons"] if c["methods"] == "tape_vs_finite_differences") and \
        directional["checks"]["tape_vs_finite_differences"]["passed"]


def autodiff_not_the_derivative(y, losses) -> list[str]:
    """Where this backend's autodiff is known not to be the loss's derivative at these targets (a true finding about
    the tape, not the model: the backend adapter's NOT_THE_DERIVATIVE), one line each."""
    found = []
    for k, (targets, fn) in enumerate(zip(as_list(y), losses, strict=True)):
        when = autodiff.not_the_derivative(fn.name)
        if when and fn.name == "categorical_crossentropy":
            sums = np.sum(np.asarray(targets, dtype=np.float64), axis=-1)
            if np.abs(sums - 1).max() > 1e-6:
                found.append(f"output {k}: the targets of a categorical cross-entropy do not sum to 1 (rows sum to "
                             f"{sums.min():.3g} to {sums.max():.3g}), and {autodiff.reverse_mode()} "
                             "disagrees with finite differences: where Keras computes this loss from the softmax's "
                             "logits, TensorFlow's registered gradient is softmax − t, not the derivative "
                             "softmax·Σt − t that the manual formula computes; normalise the targets, or give "
                             "multi-hot labels a binary cross-entropy on sigmoid outputs")
    return found


def assert_gradients(model, x, y, **options) -> GradientReport:
    """check_gradients, raising AssertionError with the worst tensor, entry, both values and the tolerance."""
    report = check_gradients(model, x, y, **options)
    if not report.passed:
        raise AssertionError(report.failure_message())
    return report


def random_batch(model, batch_size: int = 8, loss=None, seed: int = 0):
    """Inputs drawn to the model's input shapes (standard normal) and targets suited to each output's loss:
    one-hot classes for a categorical cross-entropy, integer labels for a sparse one, 0/1 for a binary one,
    standard normal otherwise. Sequences that a Keras mask is made from (read by an Embedding(mask_zero=True) or a
    Masking layer) are padded as users' batches are: each has a random length of at least one step, its tokens nonzero
    (0 is padding), and the rest is padding (token 0, or the mask_value), after the sequence in even rows and before it
    in odd ones (keras.utils.pad_sequences's padding="post" and its default, "pre")."""
    rng = np.random.default_rng(seed)
    shapes = [tuple(t.shape[1:]) for t in model.inputs] if _has_inputs(model) else None
    if shapes is None or any(None in s for s in shapes):
        raise InputError(f"{model.name}: its input shape is not fully known; give the inputs and targets "
                         "(--data PATH.npz with arrays x and y)")
    xs = []
    for k, shape in enumerate(shapes):
        padding = _padding_value(model, k)
        if _is_integer(model.inputs[k]):
            xs.append(rng.integers(0 if padding is None else 1, _token_count(model, k), (batch_size, *shape)))
        else:
            xs.append(rng.standard_normal((batch_size, *shape)))
        if padding is not None and len(shape) >= 1:
            for row, length in enumerate(rng.integers(1, shape[0] + 1, batch_size)):
                xs[-1][row, length:] = padding
                xs[-1][row] = np.roll(xs[-1][row], (shape[0] - length) * (row % 2), axis=0)  # odd rows: pre-padded
    x = xs if len(xs) > 1 else xs[0]
    targets = []
    for fn, output in zip(resolve_losses(model, loss), reference_outputs(model, x), strict=True):
        classes = output.shape[-1]
        if fn.name == "sparse_categorical_crossentropy":
            targets.append(rng.integers(0, classes, tuple(output.shape[:-1])))
        elif fn.name == "categorical_crossentropy":
            targets.append(np.eye(classes)[rng.integers(0, classes, tuple(output.shape[:-1]))])
        elif fn.name == "binary_crossentropy":
            targets.append(rng.integers(0, 2, tuple(output.shape)).astype(np.float64))
        else:
            targets.append(rng.standard_normal(tuple(ops.shape(output))))
    return x, (targets if len(targets) > 1 else targets[0])


def _is_integer(tensor) -> bool:
    return "int" in keras.backend.standardize_dtype(tensor.dtype)


def _padding_value(model, k: int):
    """What pads the sequences of the model's input k: 0 where an Embedding(mask_zero=True) reads it, the mask_value
    where a Masking layer does; None where no Keras mask is made from it."""
    graph = layer_graph(model)
    for node in [] if graph is None else graph.consumers(graph.inputs[k]):
        if isinstance(node.layer, keras.layers.Embedding) and node.layer.mask_zero:
            return 0
        if isinstance(node.layer, keras.layers.Masking):
            return node.layer.mask_value
    return None


def _token_count(model, k: int) -> int:
    """How many token ids the model's integer input k takes: the smallest input_dim of the Embeddings reading it."""
    graph = layer_graph(model)
    readers = [] if graph is None else graph.consumers(graph.inputs[k])
    sizes = [node.layer.input_dim for node in readers if isinstance(node.layer, keras.layers.Embedding)]
    if not sizes:
        raise InputError(f"{model.name}: its input {model.inputs[k].name} takes integers but feeds no Embedding, so "
                         "no range to draw them from is known; give the inputs and targets (--data PATH.npz with "
                         "arrays x and y)")
    return min(sizes)


def _has_inputs(model) -> bool:
    try:
        return bool(model.inputs)
    except (AttributeError, ValueError):
        return False


def _validated_tolerances(tolerances) -> Tolerances:
    """The tolerances a check uses: the defaults for None; refused, naming the field, where a pair is not two finite
    numbers >= 0 or a step is not a finite number > 0."""
    if tolerances is None:
        return DEFAULT_TOLERANCES
    if not isinstance(tolerances, Tolerances):
        raise InputError(f"tolerances={tolerances!r}: give a gradcheck.Tolerances, e.g. "
                         "Tolerances(finite_differences=(1e-4, 1e-6)), or None for the defaults")
    for field in dataclasses.fields(Tolerances):
        value = getattr(tolerances, field.name)
        if field.name.endswith("_step"):
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise InputError(f"tolerances.{field.name}={value!r}: give a finite step > 0 (default "
                                 f"{getattr(DEFAULT_TOLERANCES, field.name)})")
        elif not (isinstance(value, tuple) and len(value) == 2 and
                  all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in value)):
            raise InputError(f"tolerances.{field.name}={value!r}: give (rtol, atol), two finite numbers >= 0 "
                             f"(default {getattr(DEFAULT_TOLERANCES, field.name)})")
    return tolerances


def _validate(model, x, y, dtype, fd_entries, directions, seed, layer_entries):
    if not hasattr(model, "trainable_variables") or not getattr(model, "built", False):
        raise InputError("model must be a built Keras model (call it once, or build it, before checking)")
    if not model.trainable_variables:
        raise InputError(f"{model.name} has no trainable weights: there is no gradient to check")
    for variable in model.trainable_variables:
        if not np.isfinite(ops.convert_to_numpy(variable.value)).all():
            raise InputError(f"{model.name}: weight {variable.path} holds NaN or infinite values; check the model "
                             "at finite weights (a diverged training run leaves NaN weights)")
    if dtype not in DTYPES:
        raise InputError(f"dtype={dtype!r} is not one of {', '.join(DTYPES)}")
    for name, value in (("fd_entries", fd_entries), ("directions", directions)):
        if not (value is None and name == "fd_entries") and (not isinstance(value, (int, np.integer)) or value < 1):
            raise InputError(f"{name}={value!r}: give a positive whole number")
    if not isinstance(layer_entries, (int, np.integer)) or layer_entries < 0:
        raise InputError(f"layer_entries={layer_entries!r}: give a whole number, 0 or more (0: one random direction "
                         "per input and weight of each layer, no sampled entries)")
    if not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise InputError(f"seed={seed!r}: give a whole number in [0, 2**32)")
    for argument, value, side in (("x", x, "inputs"), ("y", y, "outputs")):
        names = io_names(model, side)
        if names is not None and len(as_list(value)) != len(names):
            named = f"{len(names)} {side} ({', '.join(names)})" if len(names) > 1 else f"single {side[:-1]}"
            raise InputError(f"{argument}: {len(as_list(value))} arrays for {model.name}'s {named}; give one NumPy "
                             f"array per {side[:-1]} (a Python list is read as one array per {side[:-1]}), or a dict "
                             "keyed by their names")
        for k, array in enumerate(as_list(value)):
            array = np.asarray(array)
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                where = f"{argument}[{k}]" if isinstance(value, (list, tuple)) else argument
                raise InputError(f"{where} holds {np.size(array) - np.isfinite(array).sum()} NaN or infinite "
                                 "values: a gradient there has no finite differences to check against; give finite "
                                 "inputs and targets")
    sizes = {len(a) for a in as_list(x) + as_list(y)}
    if len(sizes) != 1 or 0 in sizes:
        raise InputError(f"x and y must hold the same, non-zero number of samples; got sizes {sorted(sizes)}")


SPARSE_LOSSES = ("sparse_categorical_crossentropy",)  # integer labels: the output's shape without its class axis


def _validate_fit(model, x, y, losses) -> None:
    """The batch fits the model and its losses, said before any gradient (a misfit would otherwise fail deep in
    the backend, and read as a failed check): numbers, not strings; each input of the model's input shape; each
    target of its output's shape, or of the output's shape less the class axis for a sparse cross-entropy."""
    for argument, value in (("x", x), ("y", y)):
        for k, array in enumerate(as_list(value)):
            kind = np.asarray(array).dtype
            if kind.kind not in "biuf":
                where = f"{argument}[{k}]" if isinstance(value, (list, tuple)) else argument
                raise InputError(f"{where} holds {kind} values; give numbers (a float array, or integers for token "
                                 "ids and sparse labels)")
    if not _has_inputs(model):
        return  # a subclassed model states no shapes: Keras says what does not fit
    for k, (array, tensor) in enumerate(zip(as_list(x), model.inputs, strict=True)):
        _require_shape(f"x[{k}]" if len(model.inputs) > 1 else "x", np.shape(array), tuple(tensor.shape),
                       f"{model.name}'s input {tensor.name}")
    outputs = model.outputs if len(as_list(y)) == len(model.outputs) else []
    for k, (array, tensor, fn) in enumerate(zip(as_list(y), outputs, losses, strict=False)):
        shape, where = tuple(tensor.shape), f"y[{k}]" if len(outputs) > 1 else "y"
        if fn.name in SPARSE_LOSSES:
            if np.shape(array)[1:] in (tuple(shape[1:-1]), (*shape[1:-1], 1)):
                continue
            shape = shape[:-1]
        _require_shape(where, np.shape(array), shape, f"{model.name}'s output {tensor.name} under {fn.name}",
                       "; for integer class labels, give loss='sparse_categorical_crossentropy'"
                       if fn.name == "categorical_crossentropy" else "")


def _require_shape(where: str, got: tuple, wanted: tuple, whose: str, hint: str = "") -> None:
    """`got` (with its batch axis) fits `wanted` (Keras's shape, None for any size; a trailing axis of 1 on either
    side may be missing, as Keras's losses squeeze it): InputError naming both."""
    if len(got) + 1 == len(wanted) and wanted[-1] == 1:
        wanted = wanted[:-1]
    elif len(got) == len(wanted) + 1 and got[-1] == 1:
        got = got[:-1]
    if len(got) != len(wanted) or any(w is not None and g != w for g, w in zip(got[1:], wanted[1:], strict=True)):
        shown = "(N, " + ", ".join("any" if w is None else str(w) for w in wanted[1:]) + ")"
        raise InputError(f"{where} has shape {got}, which does not fit {whose}, {shown}; give arrays of that shape"
                         f"{hint}")


def _validate_dropout_masks(model, dropout_masks, batch_size: int):
    """Each mask must name a Dropout layer that takes one and broadcast to its output: a mask nothing reads would
    leave that layer unmasked without a word, and a misshapen one fail deep inside the backend."""
    if dropout_masks is None:
        return
    if not isinstance(dropout_masks, dict):
        raise InputError(f"dropout_masks must be a dict {{Dropout layer name: 0/1 mask}}, not "
                         f"{type(dropout_masks).__name__}")
    graph = layer_graph(model)
    if graph is None:
        raise masks_need_a_graph(model)
    dropouts = {node.layer.name: node.layer for node in graph.nodes if takes_dropout_mask(node.layer)}
    for name, mask in dropout_masks.items():
        if name not in dropouts:
            raise InputError(f"dropout_masks[{name!r}]: {model.name} has no Dropout layer of that name (its Dropout "
                             f"layers: {', '.join(dropouts) or 'none'}); other noise layers, such as SpatialDropout2D "
                             "or GaussianNoise, keep their own noise, fixed during the check")
        shape = (batch_size, *dropouts[name].output.shape[1:])
        try:
            fits = np.broadcast_shapes(np.shape(mask), shape) == shape
        except ValueError:
            fits = False
        if not fits:
            raise InputError(f"dropout_masks[{name!r}] has shape {np.shape(mask)}; give a 0/1 array of the layer's "
                             f"output shape for this batch, {shape}, or one that broadcasts to it")
