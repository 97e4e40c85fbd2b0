"""A manual-backprop twin of a Keras model: the loss and every weight's gradient by hand-written formulas.

The twin follows the model's layer graph (Sequential or Functional, any DAG) and stands in for each
layer with the manual steps of manual/table.py. Forward runs the nodes in topological order; backward
visits them in reverse and sums the gradients that meet at a fork (a tensor read by two layers).
Each output's loss comes from manual/losses.py; a cross-entropy on a softmax (or sigmoid) output is
fused with it, so that δ = ∂E/∂u = y − t (C004-1..3). The model's regularizers (model.losses, which Keras's
fit adds to the loss) come from manual/regularizers.py: a weight's penalty adds its gradient to the weight's,
an activity penalty to the gradient arriving at its layer's output. A Keras mask (Embedding(mask_zero=True),
Masking) travels with the tensors it masks, as Keras passes it on, into the formulas that follow it
(manual/table.py's `output_masked`); Keras's own mask ops in a Functional graph are left out. Weights are
read live from the Keras variables (an `assign` is seen), or from `values` {parameter name: tensor} when
given. A model the twin cannot follow raises ManualUnavailable naming every layer that lacks a formula.
"""
import contextlib
import re

import keras
import numpy as np
from keras import ops

from gradcheck import keras_internals
from gradcheck.keras_graph import data_flow, inline_nested_models, layer_graph, masks_made_by_keras
from gradcheck.losses import resolve_losses
from gradcheck.manual import layers as manual
from gradcheck.manual.losses import MANUAL_LOSSES, SUPPORTED_LOSS_OPTIONS
from gradcheck.manual.regularizers import ActivityPenalty, manual_penalty
from gradcheck.manual.table import Unsupported, manual_steps, output_masked, weights_by_name
from gradcheck.parameters import parameters
from gradcheck.reference import as_list, takes_dropout_mask


class ManualUnavailable(Exception):
    """The model has layers (or a loss) without a manual formula; `missing` names each, grouped by cause."""

    def __init__(self, missing: list[str]):
        self.missing = grouped_by_cause(missing)
        super().__init__("manual: not available — " + "; ".join(self.missing))


class FormulaError(Exception):
    """A manual formula raised while computing: the formula's own bug (or a shape it does not handle), named by
    layer and step; the check reports it as the manual method's failure and runs the others."""

    def __init__(self, layer, step, phase: str, error: Exception):
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        super().__init__(f"{layer.name} ({type(layer).__name__}): the formula {type(step).__name__}.{phase} raised "
                         f"{type(error).__name__}: {reason}")


_MISSING = re.compile(r"^(?P<kind>\S+) \((?P<name>[^:]+): (?P<reason>.*)\)$")


def grouped_by_cause(missing: list[str]) -> list[str]:
    """"Class (layer: reason)" entries of one class and reason as one, "Class × 54 (a, b, c, …: reason)", in the
    order of their first layer (ConvNeXtTiny has 54 LayerScales: one line, not 54)."""
    groups: dict = {}
    for entry in missing:
        found = _MISSING.match(entry)
        key = (found["kind"], found["reason"]) if found else (entry, None)
        groups.setdefault(key, []).append(found["name"] if found else entry)
    lines = []
    for (kind, reason), names in groups.items():
        if reason is None:
            lines.append(kind)
        elif len(names) == 1:
            lines.append(f"{kind} ({names[0]}: {reason})")
        else:
            shown = ", ".join(names[:3]) + (", …" if len(names) > 3 else "")
            lines.append(f"{kind} × {len(names)} ({shown}: {reason})")
    return lines


class ManualTwin:
    def __init__(self, model, loss=None, training: bool = False):
        graph = layer_graph(model)
        if graph is None:
            raise ManualUnavailable([f"{type(model).__name__} is a subclassed model (no layer graph to follow)"])
        self.model, self.graph = model, data_flow(followed_graph(graph, training))
        self.params = parameters(model)
        self.param_name = {id(v): name for name, v in self.params.items()}
        self.dtype = model.trainable_variables[0].dtype if model.trainable_variables else "float32"
        self.input_dtypes = [keras.backend.standardize_dtype(t.dtype) for t in model.inputs]  # an Embedding's: int
        missing, self.nodes = [], []
        self.masked = set()  # the tensors that carry a Keras mask (Embedding(mask_zero=True), Masking)
        unknown = set()  # the outputs of layers without a formula: whether they carry a mask is not followed
        for node in self.graph.nodes:
            try:
                steps = manual_steps(node.layer, training, node.arguments)
                inputs_masked = [tensor in self.masked for tensor in node.inputs]
                if len(node.outputs) != 1 and not (len(steps) == 1 and steps[0].return_state
                                                   and not any(inputs_masked)):
                    raise Unsupported(f"{len(node.outputs)} outputs" + (" and a Keras mask" if any(inputs_masked)
                                                                         else ""))
                if node.masks and not ((inputs_masked[0] or node.inputs[0] in unknown)
                                       and masks_made_by_keras(node.arguments)):
                    raise Unsupported("called with a mask of the caller's (the formulas follow the masks that "
                                      "Embedding(mask_zero=True) and Masking make)")
                if output_masked(node.layer, steps, inputs_masked):
                    self.masked.add(node.outputs[0])
                self.nodes.append((node, steps))
            except Unsupported as reason:
                missing.append(f"{type(node.layer).__name__} ({node.layer.name}: {reason})")
                unknown.update(node.outputs)
        self.weight_penalties = self._penalties(
            ((name, v.regularizer) for name, v in self.params.items()), "on", missing)
        self.activity_penalties = {tensor: ActivityPenalty(penalty) for tensor, penalty in self._penalties(
            ((node.outputs[0], getattr(node.layer, "activity_regularizer", None)) for node in self.graph.nodes
             if len(node.outputs) == 1), "activity regularizer of a layer's output", missing).items()}
        self.loss_steps = []
        if not missing:
            for output, output_loss in zip(self.graph.outputs, resolve_losses(model, loss), strict=True):
                try:
                    self.loss_steps.append((output, self._manual_loss(output, output_loss), output_loss.weight))
                except Unsupported as reason:
                    missing.append(f"loss {output_loss.name} ({reason})")
        if missing:
            raise ManualUnavailable(missing)

    @staticmethod
    def _penalties(regularized, where: str, missing: list) -> dict:
        """{key: manual penalty} for each (key, regularizer) given a regularizer; one without a formula is missing."""
        penalties = {}
        for key, regularizer in regularized:
            if regularizer is None:
                continue
            penalty = manual_penalty(regularizer)
            if penalty is None:
                named = f"{where} {key}" if isinstance(key, str) else where
                missing.append(f"{type(regularizer).__name__} ({named}: no manual formula for this regularizer)")
            else:
                penalties[key] = penalty
        return penalties

    def _manual_loss(self, output: int, loss):
        if loss.name not in MANUAL_LOSSES:
            raise Unsupported("no manual formula for this loss")
        if output in self.masked:
            raise Unsupported("the output carries a Keras mask, by which Keras weights the loss, and no formula here "
                              "does: end the model with a layer that drops the mask (a recurrent layer without "
                              "return_sequences, a GlobalAveragePooling1D)")
        if loss.reduction != "mean":
            raise Unsupported(f"reduction={loss.reduction!r}: the formulas average over the batch")
        for option, value in loss.options.items():
            if option not in SUPPORTED_LOSS_OPTIONS or value not in SUPPORTED_LOSS_OPTIONS[option]:
                raise Unsupported(f"{option}={value!r}")
        manual_loss = MANUAL_LOSSES[loss.name]()
        if manual_loss.fuses is None or loss.options.get("from_logits"):
            return manual_loss
        # Fuse: the loss takes the logits u, so the output's softmax (or sigmoid) step is dropped here.
        steps = next(steps for node, steps in self.nodes if output in node.outputs)
        activation = manual.ACTIVATIONS[manual_loss.fuses]
        if not steps or not isinstance(steps[-1], activation) or getattr(steps[-1], "axis", -1) != -1 \
                or self.graph.consumers(output):
            raise Unsupported(f"its output is not a {manual_loss.fuses} to fuse with; use from_logits=True or "
                              f"end the model with a {manual_loss.fuses}")
        if output in self.activity_penalties:
            raise Unsupported(f"an activity regularizer on the {manual_loss.fuses} output it fuses with (the fused "
                              f"formula's δ is at the logits); use from_logits=True")
        steps.pop()
        return manual_loss

    def _weights(self, layer, step, values: dict) -> dict:
        own = weights_by_name(layer)
        return {name: self._value(own[name], values) for name in step.weights if name in own}

    def _value(self, variable, values: dict | None):
        """The variable's value, or the one `values` gives for its parameter name (a frozen weight has none)."""
        value = (values or {}).get(self.param_name.get(id(variable)))
        return ops.cast(variable.value if value is None else value, self.dtype)

    def forward(self, x, t, dropout_masks=None, values=None):
        """The loss; keeps what backward needs.

        dropout_masks: {dropout layer name: 0/1 mask}, or a callable (manual.Dropout, its input) -> mask
        that draws one (a training step); None: dropout is the identity (inference).
        """
        env = dict(zip(self.graph.inputs, (ops.cast(v, self.dtype if "float" in dtype else dtype) for v, dtype
                                           in zip(as_list(x), self.input_dtypes, strict=True)), strict=True))
        keras_masks = {}  # tensor -> its Keras mask, for the tensors in self.masked
        for node, steps in self.nodes:
            inputs = [env[i] for i in node.inputs]
            y = inputs if len(inputs) > 1 else inputs[0]
            keras_mask = keras_masks.get(node.inputs[0]) if len(inputs) == 1 else None  # passed on unless followed
            for step in steps:
                follows = {"mask": keras_mask} if step.follows_masks else {}
                y = step_forward(node.layer, step, y, self._weights(node.layer, step, values), dropout_masks, follows)
                if follows:
                    keras_mask = step.output_mask
            env.update(zip(node.outputs, y if len(node.outputs) > 1 else [y], strict=True))
            if node.outputs[0] in self.masked:
                keras_masks[node.outputs[0]] = keras_mask
        total = 0
        for (output, loss_step, weight), target in zip(self.loss_steps, as_list(t), strict=True):
            target = target if loss_step.integer_targets else ops.cast(target, self.dtype)
            total = total + weight * loss_step.forward(env[output], target)  # Σ_k weight_k · L_k
        for name, penalty in self.weight_penalties.items():  # model.losses, as Keras's fit adds them
            total = total + penalty.forward(self._value(self.params[name], values))
        for tensor, penalty in self.activity_penalties.items():
            total = total + penalty.forward(env[tensor])
        return total

    def gradient_tensors(self) -> list:
        """Every weight's gradient, in parameters(model) order, after forward (C002-5: forward first)."""
        arriving = {}  # tensor -> dL/d(tensor), summed over every path that reaches it
        grads = {}  # parameter name -> dL/d(weight), summed over every node that calls its layer (a shared layer)
        for output, loss_step, weight in self.loss_steps:
            manual.accumulate(arriving, output, weight * loss_step.backward())
        for tensor, penalty in self.activity_penalties.items():
            manual.accumulate(arriving, tensor, penalty.backward())
        for name, penalty in self.weight_penalties.items():
            manual.accumulate(grads, name, penalty.backward())
        for node, steps in reversed(self.nodes):  # reverse topological order
            douts = [arriving.pop(output, None) for output in node.outputs]
            if all(d is None for d in douts):
                continue  # nothing downstream reaches the loss
            dout = douts if len(douts) > 1 else douts[0]  # several outputs (return_state): None where none arrives
            variables = weights_by_name(node.layer)
            for step in reversed(steps):
                with naming_the_formula(node.layer, step, "backward"):
                    dout = step.backward(dout)
                for weight, grad in step.grads.items():
                    name = self.param_name.get(id(variables[weight]))
                    if name is not None:  # None: a frozen weight (trainable=False), not a parameter
                        manual.accumulate(grads, name, grad)
            for tensor, grad in zip(node.inputs, dout if len(node.inputs) > 1 else [dout], strict=True):
                manual.accumulate(arriving, tensor, grad)
        return [grads[name] if name in grads else ops.zeros(v.shape, self.dtype) for name, v in self.params.items()]

    def choose_fastest_formulations(self, x, t, compile=None) -> dict[str, dict[str, float]]:
        """Where a layer's formula has several correct formulations whose speed depends on the CPU and the shapes
        (Conv2D's kernel gradient), time them at the shapes of this batch, compiled by `compile` as the caller
        will run them, and keep the faster for the layer: {layer name: {formulation: seconds}}. Runs the forward
        once; call it eagerly, before compiling the step."""
        self.forward(x, t)
        chosen = {node.layer.name: step.choose_fastest(compile) for node, steps in self.nodes for step in steps}
        return {name: seconds for name, seconds in chosen.items() if seconds}

    def loss_and_gradient_tensors(self, x, t, dropout_masks=None, values=None) -> tuple:
        """forward then backward as tensors: traceable, so a training step can compile it into a tf.function."""
        loss = self.forward(x, t, dropout_masks, values)
        return loss, self.gradient_tensors()

    def loss_and_gradients(self, x, t, dropout_masks=None, values=None,
                           compile=None) -> tuple[float, dict[str, np.ndarray]]:
        """The loss and every weight's gradient by parameter name, as NumPy. `compile`: how to run the formulas
        (e.g. autodiff.once, compiled whole on JAX); None: eagerly."""
        run = (compile or (lambda fn: fn))(self.loss_and_gradient_tensors)
        loss, grads = run(x, t, dropout_masks, values)
        return float(ops.convert_to_numpy(loss)), {name: ops.convert_to_numpy(g)
                                                   for name, g in zip(self.params, grads, strict=True)}


def step_forward(layer, step, y, weights: dict, dropout_masks=None, follows: dict | None = None):
    """One manual step's forward on y, with its weights {name the step reads it by: value}; a Dropout step applies
    its layer's mask from `dropout_masks` (ManualTwin.forward), a step that follows Keras masks reads `follows`."""
    with naming_the_formula(layer, step, "forward"):
        if isinstance(step, manual.Dropout):
            mask = dropout_masks(step, y) if callable(dropout_masks) else (dropout_masks or {}).get(layer.name)
            return step.forward(y, mask)
        if step.weights:
            return step.forward(y, **(follows or {}), **weights)
        return step.forward(y, **(follows or {}))


def formula_vjp(layer, steps: list, inputs: list, weights: dict, dout, dropout_masks=None, mask=None) -> tuple:
    """A layer's formulas alone, at its inputs and weights ({name the steps read it by: value}), with the Keras mask
    arriving at its input: its output, and what `dout` at that output sends back to each input and weight,
    ([input gradients], {weight name: gradient})."""
    y = inputs if len(inputs) > 1 else inputs[0]
    for step in steps:
        follows = {"mask": mask} if step.follows_masks else {}
        y = step_forward(layer, step, y, {n: weights[n] for n in step.weights if n in weights},
                         dropout_masks, follows)
        mask = step.output_mask if follows else mask
    grads: dict = {}
    for step in reversed(steps):
        with naming_the_formula(layer, step, "backward"):
            dout = step.backward(dout)
        for name, grad in step.grads.items():
            manual.accumulate(grads, name, grad)
    return y, (list(dout) if len(inputs) > 1 else [dout]), grads


@contextlib.contextmanager
def naming_the_formula(layer, step, phase: str):
    """An exception inside a formula's forward or backward becomes a FormulaError naming the layer and the step."""
    try:
        yield
    except Exception as error:
        raise FormulaError(layer, step, phase, error) from error


def followed_graph(graph, training: bool):
    """The layer graph the checks follow: a base model inside the model is followed layer by layer, unless its
    Dropout would draw Keras's own masks (a check's masks are applied to the outer model's Dropout layers only) or it
    regularizes its own output; then it is one node."""
    return inline_nested_models(
        graph, keep=lambda nested: nested.activity_regularizer is not None or training and _has_dropout(nested))


def _has_dropout(model) -> bool:
    return any(takes_dropout_mask(layer) for layer in keras_internals.sublayers(model))
