"""Layer by layer: every layer call checked alone, at the activations the model feeds it.

A whole-model check says which weights disagree, not which layer is wrong: a layer with a wrong gradient makes every
tensor below it disagree. Here the model runs once on the batch, every layer call's arguments are kept, and each call
is checked alone as the function p ↦ g(p) = Σ u·f(p) of its float inputs (those a weight reaches: the gradient
of the loss with respect to the weights passes through no other) and its weights p, u a fixed random
cotangent at its outputs: g's gradient is the layer's vector-Jacobian product uᵀJ, what backprop sends through it.
That gradient by the backend's autodiff is compared with
- central differences of the layer's own forward (a layer's cost, not the model's) along one random direction per
  input and per weight (entries standard normal, so each moves by about the step), and on sampled entries of each
  weight, and of an input whose direction met a kink (one entry rarely sits on a kink that a direction crosses, such
  as a max-pool's tie between ReLU zeros);
- forward mode, uᵀJv along all those directions at once;
- the manual formula's backward, where the layer has one (manual/table.py), over every entry.
A disagreement names the layer, which of its inputs or weights, the entry, both values and the tolerance.

Tolerances are gradcheck.py's. The central difference is taken of the outputs first, Σ u·(f(p ± h·v) − f(p)), so
that only the outputs that move carry rounding into it: each is within a few ulps of its value, which bounds the
rounding of each evaluation by eps·Σ|u|·(|f(p ± h·v)| + |f(p)|) over the moved outputs; the tolerance allows
ROUNDING_MARGIN times that bound over 2h (gradcheck.FiniteDifferences). The directional derivatives that forward and
reverse mode compute are dot products over every entry, rounded by at most eps·Σ|uᵀJ·v| each, allowed the same
margin. Kinks are judged inside the layer: FiniteDifferences's detector on g, and the inputs of the layer's own
piecewise activations recorded at p and at p ± h/100 (kinks.py).
"""
import sys
import time
from dataclasses import asdict, dataclass

import keras
import numpy as np
from keras import ops

from gradcheck import autodiff, keras_internals, kinks
from gradcheck.dtypes import floatx
from gradcheck.keras_graph import Node, data_flow, layer_graph, masks_made_by_keras, run_graph
from gradcheck.manual.table import Unsupported, manual_steps, weights_by_name
from gradcheck.manual.twin import FormulaError, followed_graph, formula_vjp
from gradcheck.methods import (
    DEFAULT_TOLERANCES,
    ROUNDING_MARGIN,
    Comparison,
    FiniteDifferences,
    Tolerances,
    compare,
    kink_layers,
    sample_indices,
)
from gradcheck.parameters import parameters
from gradcheck.reference import as_list, call_layer

EPS = float(np.finfo(np.float64).eps)
COMPILE_AFTER_S = 0.2  # a layer whose first eager call takes longer is compiled for its finite differences
WHAT_DISAGREES = {"tape_vs_finite_differences": "disagrees with finite differences of its forward",
                  "jvp_vs_tape": "by reverse mode disagrees with forward mode",
                  "manual_vs_tape": "by the manual formula disagrees with the tape"}


@dataclass
class LayerCall:
    """One call of a layer (or a keras.ops operation) in the model's graph, with the arguments the model's forward on
    the batch gave it."""
    node: Node
    name: str  # the layer's name; "name (call k)" for the k-th call of a layer called more than once
    values: dict  # tensor key -> value: everything the call reads (inputs and Keras masks)
    inputs: list  # the keys of its float inputs that a trainable weight reaches: the ones checked
    weights: dict  # parameter name -> variable: its trainable weights
    dtype: str  # the model's compute dtype (floatx while it runs: a layer may draw noise in floatx)


def layer_calls(model, x, training: bool = False, dropout_masks: dict | None = None) -> list[LayerCall]:
    """Every layer call of the model in topological order (nested Sequential and Functional models followed inside, as
    the manual twin follows them: manual/twin.py's followed_graph),
    with its arguments in a forward on the batch x; [] for a subclassed model, whose calls are its own Python."""
    graph = layer_graph(model)
    if graph is None:
        return []
    graph = followed_graph(graph, training)
    values = dict(zip(graph.inputs, (ops.convert_to_tensor(v) for v in as_list(x)), strict=True))

    def call_node(node, args, kwargs):
        outputs = call_layer(node.layer, args, kwargs, training, dropout_masks)
        values.update(zip(node.outputs, as_list(outputs), strict=True))
        return outputs

    with floatx(model.compute_dtype), keras.StatelessScope():
        run_graph(graph, [values[key] for key in graph.inputs], call_node)
    name_of = {id(v): name for name, v in parameters(model).items()}
    calls, seen = [], {}
    below_a_weight = set()  # tensors that a trainable weight reaches: what backprop must carry a gradient through
    for node in data_flow(graph).nodes:
        seen[id(node.layer)] = seen.get(id(node.layer), 0) + 1
        name = node.layer.name + (f" (call {seen[id(node.layer)]})" if seen[id(node.layer)] > 1 else "")
        # An input no weight reaches (the model's data) needs no gradient, and its layer may not be smooth in it: a
        # Masking layer's output jumps where a padded step moves off its mask_value.
        inputs = [key for key in dict.fromkeys(node.inputs) if key in below_a_weight and _is_float(values[key])]
        weights = {name_of[id(v)]: v for v in getattr(node.layer, "trainable_variables", []) if id(v) in name_of}
        if inputs or weights:
            below_a_weight.update(node.outputs)
        calls.append(LayerCall(node, name, values, inputs, weights, model.compute_dtype))
    for call in calls:  # count the calls of layers called more than once from 1, as the others' names read
        if seen[id(call.node.layer)] > 1 and not call.name.endswith(")"):
            call.name += " (call 1)"
    return calls


def _with_mask_of(recorded, value):
    """`value` as a tensor carrying the Keras mask that the recorded input carried (a Sequential model passes a
    Masking layer's mask on the tensor itself, and the layer reads it there)."""
    tensor = ops.convert_to_tensor(value)
    mask = keras_internals.get_keras_mask(recorded)
    if mask is not None:
        keras_internals.set_keras_mask(tensor, mask)
    return tensor


def _is_float(value) -> bool:
    return "float" in keras.backend.standardize_dtype(value.dtype)


class LocalProblem:
    """One layer call as g(p) = Σ u·f(p) of its blocks p: its float inputs ("input k") and its trainable weights (by
    parameter name)."""

    def __init__(self, call: LayerCall, training: bool, dropout_masks: dict | None, rng):
        self.call, self.training, self.masks = call, training, dropout_masks
        self.point = {f"input {k}": ops.convert_to_numpy(call.values[key]) for k, key in enumerate(call.inputs)}
        self.point.update({name: ops.convert_to_numpy(v.value) for name, v in call.weights.items()})
        self.point_tensors = {name: ops.convert_to_tensor(value) for name, value in self.point.items()}
        started = time.perf_counter()
        self.outputs_at_point = [ops.convert_to_numpy(y) for y in self.outputs(self.point_tensors)]
        # Finite differences call the layer some twenty times: compiled once where one eager call is slow (Keras on
        # TensorFlow runs a grouped convolution through a tf.function it makes anew, and compiles, at every call).
        self.evaluate = autodiff.compiled(self.outputs) if time.perf_counter() - started > COMPILE_AFTER_S \
            else self.outputs
        self.cotangents = [rng.standard_normal(y.shape) for y in self.outputs_at_point]
        self._sizes = [(np.abs(u), np.abs(y0)) for u, y0 in zip(self.cotangents, self.outputs_at_point, strict=True)]

    def outputs(self, blocks: dict) -> list:
        """The call's float outputs with `blocks` (tensors) in place of its inputs and weights."""
        filled = dict(self.call.values)
        filled.update({key: _with_mask_of(self.call.values[key], blocks[f"input {k}"])
                       for k, key in enumerate(self.call.inputs)})
        mapping = [(variable, blocks[name]) for name, variable in self.call.weights.items()]
        with floatx(self.call.dtype), keras.StatelessScope(state_mapping=mapping):  # floatx: as reference's forward
            args, kwargs = self.call.node.call_arguments(filled)
            outputs = call_layer(self.call.node.layer, args, kwargs, self.training, self.masks)
        return [y for y in as_list(outputs) if _is_float(y)]

    def g(self, blocks: dict):
        """Σ u·f, as a tensor: what autodiff differentiates."""
        return sum(ops.sum(ops.convert_to_tensor(u, y.dtype) * y)
                   for u, y in zip(self.cotangents, self.outputs(blocks), strict=True))

    def moved(self, blocks: dict) -> tuple[float, float]:
        """Σ u·(f(p) − f(point)) and a bound on its rounding error, eps·Σ|u|·(|f(p)| + |f(point)|) over the outputs
        that moved: what central differences take."""
        total, rounding = 0.0, 0.0
        for u, y, y0, (size_u, size_y0) in zip(self.cotangents, self.evaluate(blocks), self.outputs_at_point,
                                               self._sizes, strict=True):
            y = ops.convert_to_numpy(y)
            change = y - y0
            total += float(np.vdot(u, change))
            size = np.abs(y)
            size += size_y0
            size *= change != 0
            rounding += EPS * float(np.vdot(size_u, size))
        return total, rounding

    def with_block(self, name: str, value) -> dict:
        """The point's blocks (tensors) with one replaced: the others are converted once, not at every call."""
        return {**self.point_tensors, name: ops.convert_to_tensor(value)}

    def kink_probe(self, blocks_at) -> kinks.KinkProbe | None:
        """The inputs of the layer's own piecewise activations at the blocks `blocks_at(w)`, for FiniteDifferences."""
        layer = self.call.node.layer
        points = kinks.kink_points(layer, include_self=True)
        if not points:
            return None

        def inputs_at(blocks):
            return kinks.kinked_inputs(layer, lambda: self.outputs(blocks), include_self=True)
        if not hasattr(self, "_kinked_at_point"):  # one forward for every block's probe
            self._kinked_at_point = inputs_at(self.point_tensors)
        return kinks.KinkProbe(points, self._kinked_at_point, lambda w: inputs_at(blocks_at(w)))


def check_layer(call: LayerCall, training=False, dropout_masks=None, entries: int = 2, seed: int = 0,
                tolerances: Tolerances = DEFAULT_TOLERANCES) -> dict:
    """One layer call checked alone (module docstring): its comparisons, verdict and the first failure, described."""
    start = time.perf_counter()
    rng = np.random.default_rng([seed, 2])
    problem = LocalProblem(call, training, dropout_masks, rng)
    row = {"layer": call.name, "class": type(call.node.layer).__name__, "blocks": list(problem.point),
           "outputs": len(problem.outputs_at_point)}
    if not problem.point or not problem.outputs_at_point:
        return {**row, "checked": False, "passed": True, "comparisons": [], "methods": [], "kinks": 0,
                "worst_over_tolerance": 0.0, "seconds": round(time.perf_counter() - start, 3)}
    _, tape = autodiff.value_and_gradients(problem.g, problem.point)
    tape = {name: ops.convert_to_numpy(grad) for name, grad in tape.items()}
    comparisons: list[Comparison] = []
    rtol_fd, atol_fd = tolerances.finite_differences
    rtol_exact, atol_exact = tolerances.exact
    directions = {name: rng.standard_normal(value.shape) for name, value in problem.point.items()}
    for name, value in problem.point.items():
        def moved_along(s, name=name):
            return problem.with_block(name, problem.point[name] + float(s) * directions[name])
        along = FiniteDifferences(lambda s, moved_along=moved_along: problem.moved(moved_along(s)), np.zeros(()),
                                  tolerances.fd_step, problem.kink_probe(moved_along))
        comparisons.append(along.compare(f"{name} (along a random direction)", "tape_vs_finite_differences", [()],
                                         [float(np.sum(tape[name] * directions[name]))], rtol_fd, atol_fd))
        # Entries of each weight; of an input only where its direction met a kink (a max-pool's tie between ReLU
        # zeros), which one entry rarely sits on.
        if entries and (name in call.weights or comparisons[-1].kinks):
            indices = sample_indices(value.shape, entries, rng)
            def with_entries(w, name=name):
                return problem.with_block(name, w)
            fd = FiniteDifferences(lambda w, with_entries=with_entries: problem.moved(with_entries(w)), value,
                                   tolerances.fd_step, problem.kink_probe(with_entries))
            comparisons.append(fd.compare(name, "tape_vs_finite_differences", indices,
                                          [tape[name][i] for i in indices], rtol_fd, atol_fd))
    try:  # forward mode along all the directions at once: one forward, not one per block
        jvp = float(ops.convert_to_numpy(autodiff.jvp(problem.g, problem.point, directions)[1]))
        products = [tape[name] * directions[name] for name in problem.point]
        rounding = ROUNDING_MARGIN * EPS * sum(float(np.sum(np.abs(p))) for p in products)
        comparisons.append(compare("all (along a random direction)", "jvp_vs_tape", [jvp],
                                   [sum(float(np.sum(p)) for p in products)], rtol_exact, atol_exact + rounding))
    except autodiff.ForwardModeUnavailable as unavailable:
        row["forward_mode"] = str(unavailable)
    manual, row["manual"] = _manual_gradients(call, problem, training, dropout_masks)
    for name, grad in (manual or {}).items():
        comparisons.append(compare(name, "manual_vs_tape", grad, tape[name], rtol_exact, atol_exact))
    failed = [c for c in comparisons if not c.passed]
    # Named first: a disagreement with finite differences, the derivative-free truth; the worst of that method.
    worst = min(failed, key=lambda c: (list(WHAT_DISAGREES).index(c.methods), -c.worst_over_tolerance)) \
        if failed else None
    passed = not failed and not str(row["manual"]).startswith("FAILED")
    return {**row, "checked": True, "passed": passed, "comparisons": [asdict(c) for c in comparisons],
            "methods": sorted({c.methods for c in comparisons}),
            "kinks": sum(c.kinks for c in comparisons if c.methods == "tape_vs_finite_differences"),
            "kinks_crossed": kink_layers([c.kinks_crossed for c in comparisons if c.kinks_crossed]),
            "worst_over_tolerance": max((c.worst_over_tolerance for c in comparisons), default=0.0),
            "failure": describe(call.name, type(call.node.layer).__name__, worst, row["manual"], failed) if not passed
            else None, "seconds": round(time.perf_counter() - start, 3)}


def _manual_gradients(call: LayerCall, problem: LocalProblem, training, dropout_masks) -> tuple[dict | None, str]:
    """The manual formula's gradients of g by block, and what became of it: "formula", "none (why)", or "FAILED: …"
    where the formula raised."""
    node, layer = call.node, call.node.layer
    if len(node.outputs) != 1 or len(problem.outputs_at_point) != 1:
        return None, "none (several outputs: the formula is checked in the model's walk)"
    try:
        steps = manual_steps(layer, training, node.arguments)
    except Unsupported as reason:
        return None, f"none ({reason})"
    # The Keras mask arriving, an argument in a Functional graph, on the tensor itself in a Sequential model: a formula
    # that follows masks takes it (as the manual twin gives it); any other layer a mask reaches is left to the twin,
    # which knows whether the layer computes with it.
    masks = [call.values[key] for key in node.masks] or \
        [keras_internals.get_keras_mask(call.values[key]) for key in node.inputs]
    mask = next((m for m in masks if m is not None), None)
    follows = len(steps) == 1 and steps[0].follows_masks
    if mask is not None and not (follows and len(node.inputs) == 1 and masks_made_by_keras(node.arguments)):
        return None, "none (a Keras mask reaches it: its formula is checked in the model's walk)"
    by_id = {id(v): name for name, v in call.weights.items()}
    variables = weights_by_name(layer)
    weights = {name: ops.convert_to_tensor(problem.point[by_id[id(v)]] if id(v) in by_id else v.value)
               for name, v in variables.items()}
    block_of = {key: f"input {k}" for k, key in enumerate(call.inputs)}
    inputs = [ops.convert_to_tensor(problem.point[block_of[key]]) if key in block_of else call.values[key]
              for key in node.inputs]
    dout = ops.convert_to_tensor(problem.cotangents[0], problem.outputs_at_point[0].dtype)
    try:
        with autodiff.not_recorded():
            _, input_grads, weight_grads = formula_vjp(layer, steps, inputs, weights, dout, dropout_masks, mask)
    except FormulaError as error:
        return None, f"FAILED: {error}"
    grads: dict = {}
    for key, grad in zip(node.inputs, input_grads, strict=True):
        if key in block_of and grad is not None:
            grads[block_of[key]] = grads.get(block_of[key], 0) + ops.convert_to_numpy(grad)
    for name, grad in weight_grads.items():
        if id(variables[name]) in by_id:
            grads[by_id[id(variables[name])]] = ops.convert_to_numpy(grad)
    return grads, "formula"


def describe(layer: str, kind: str, worst: Comparison | None, manual: str, failed: list[Comparison]) -> str:
    """A failed layer in one line: what disagrees with what, the entry, both values and the tolerance."""
    if worst is None:
        return f"layer {layer} ({kind}): its manual formula {manual.removeprefix('FAILED: ').split(': ', 1)[-1]}"
    block, _, along = worst.tensor.partition(" (")
    subject = f"its input {block.removeprefix('input ')}" if block.startswith("input ") else \
        "its inputs and weights" if block == "all" else f"its weight {block}"
    where = "along a random direction" if along else f"at entry {tuple(worst.worst_entry or ())}"
    a, b = worst.worst_values or (float("nan"), float("nan"))
    first, second = worst.methods.split("_vs_")
    also = sorted({WHAT_DISAGREES[c.methods].split(" with ")[-1] for c in failed if c.methods != worst.methods})
    return (f"layer {layer} ({kind}): its gradient with respect to {subject} {WHAT_DISAGREES[worst.methods]}, "
            f"{where}: {first} {a!r} vs {second.replace('_', ' ')} {b!r}, |difference| {abs(a - b):.3g} > tolerance "
            f"{worst.worst_tolerance or 0:.3g} ({worst.worst_over_tolerance:.3g}× the tolerance)" +
            (f"; it disagrees with {' and '.join(also)} too" if also else ""))


class Progress:
    """Layers done / total and the time left: one line updated in place on a terminal after the first seconds, a
    single line at the end elsewhere (a log); nothing when `show` is False."""

    def __init__(self, total: int, show: bool, label: str, stream=None, after: float = 2.0):
        self.total, self.show, self.label, self.after = total, show, label, after
        self.stream = stream or sys.stderr
        self.start, self.shown = time.perf_counter(), False
        self.terminal = bool(getattr(self.stream, "isatty", lambda: False)())

    def update(self, done: int, current: str = "") -> None:
        elapsed = time.perf_counter() - self.start
        if not self.show or not self.terminal or elapsed < self.after:
            return
        left = elapsed / max(done, 1) * (self.total - done)
        self.stream.write(f"\r{self.label}: {done}/{self.total} layers, {_duration(elapsed)} so far, about "
                          f"{_duration(left)} left {current[:40]:<40}")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        elapsed = time.perf_counter() - self.start
        if not self.show or elapsed < self.after and not self.shown:
            return
        self.stream.write(("\r" if self.shown else "") + f"{self.label}: {self.total}/{self.total} layers checked in "
                          f"{_duration(elapsed)}" + " " * 50 + "\n")
        self.stream.flush()


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def check_layers(model, x, training=False, dropout_masks=None, entries: int = 2, seed: int = 0,
                 progress: bool = True, tolerances: Tolerances = DEFAULT_TOLERANCES) -> dict:
    """Every layer call of the model checked alone (module docstring), in topological order: the rows, the verdict,
    the first failing layer, and which parameters the local checks covered (their weights' gradients checked against
    finite differences); {"available": False} for a subclassed model."""
    start = time.perf_counter()
    calls = layer_calls(model, x, training, dropout_masks)
    if not calls:
        return {"available": False, "reason": f"{type(model).__name__} is a subclassed model (no layer graph to "
                "follow)", "calls": [], "passed": True, "covered": [], "first_failure": None}
    shown = Progress(len(calls), progress, f"{model.name}: checking layer by layer")
    rows = []
    for done, call in enumerate(calls):
        shown.update(done, call.name)
        rows.append(check_layer(call, training, dropout_masks, entries, seed, tolerances))
    shown.close()
    failed = [row for row in rows if not row["passed"]]
    covered = sorted({name for call, row in zip(calls, rows, strict=True) if row["checked"] for name in call.weights})
    return {"available": True, "calls": rows, "passed": not failed, "covered": covered, "entries": entries,
            "first_failure": failed[0]["failure"] if failed else None,
            "seconds": round(time.perf_counter() - start, 2)}
