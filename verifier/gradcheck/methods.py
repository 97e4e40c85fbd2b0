"""Three gradients per weight tensor — manual backprop, the framework's autodiff (tf.GradientTape),
central differences — compared, for any Keras model; and a directional check over all parameters. (Each layer
alone: layer_check.py, with these tolerances and this FiniteDifferences.)

Agreement criterion per entry (numpy's allclose): |a − b| <= atol + rtol·max(|a|, |b|).
Tolerances, and why:
- manual vs tape, float64: rtol 1e-9, atol 1e-12. Both are exact formulas; they differ only by the
  order of float64 roundings (eps 1.1e-16) in sums of at most ~10⁵ terms: ~1e-13 relative at worst.
- manual vs tape, float32: rtol 1e-3, atol 1e-6 × the tensor's largest gradient. float32 eps is
  6e-8; sums of thousands of terms with cancellation lose a few digits more.
- anything vs central differences (always float64, step h = 1e-6): truncation error h²/6·|L'''|
  ~1e-13 and rounding error ~eps·|L|/h ~ 3e-10, so rtol 1e-5 and atol 1e-7 leave a 300× margin
  (PyTorch's gradcheck uses atol 1e-5, rtol 1e-3 for the same step). A float32 gradient against them
  is limited by its own rounding, so it gets the float32 tolerance above instead.
Kinks, first from the loss alone: an entry whose gradient disagrees with the central
difference at h is measured again at h/10 and h/100. If it agrees there, the ±h interval straddled a
point where the loss is not differentiable (a ReLU at 0, a max-pool's tie). If not, the point lies on such
a kink when, at steps h and h/10 (or h/10 and h/100, or h/100 and h/1000, in case another kink lies
between), each side's
one-sided slope holds steady (rtol 1e-3, atol 1e-5) and the jump between the sides does not shrink (a
smooth function's, h·L'', shrinks tenfold) and stands out of both each side's own change (10×) and float64
rounding (ROUNDING_MARGIN). There the loss has no derivative to check: the one-sided slopes bound its
subgradients, and autodiff, which composes each ReLU's choice at 0 (TensorFlow takes 0), may give a value
outside them (jumps of 2.5e-7 to 1.2e-5 with the tape 2e-4 to 6e-4 away were seen at Keras's zero biases).
Either way the entry is reported as a kink and not counted; a wrong gradient at a differentiable point
agrees at no step and shows no steady jump. Rounding noise, from a model that computes partly in float32,
moves the one-sided slopes at every step (by ~eps·|L|/h), so it is never taken for a kink; forward and
reverse mode then disagree beyond float64 rounding, and the report says so (`below_float64`).
Then inside the model, where the loss alone cannot show a kink that near: the inputs of its piecewise activations are
recorded at w and at w ± h/100, and an entry whose smallest step moves one onto or across its kink is a kink too
(kinks.py). A layer's own check (layer_check.py) uses the same detector on its layer alone.
"""
import time
from dataclasses import asdict, dataclass

import numpy as np
from keras import ops

from gradcheck import autodiff, kinks
from gradcheck.dtypes import checked_in
from gradcheck.keras_graph import layer_graph
from gradcheck.losses import resolve_losses
from gradcheck.manual.twin import FormulaError, ManualTwin, ManualUnavailable
from gradcheck.parameters import parameters
from gradcheck.reference import as_list, draw_dropout_masks, penalty_terms, reference_loss

TINY = 1e-300  # floor of the relative error's denominator


@dataclass(frozen=True)
class Tolerances:
    """What a check accepts, each an (rtol, atol) pair: a comparison passes where |a − b| <= atol + rtol·max(|a|, |b|)
    at every entry. The defaults are derived in this module's docstring; check_gradients(tolerances=...) sets them.

    exact: two exact derivatives in float64 (manual vs tape, forward vs reverse mode).
    float32: manual vs tape in float32; atol is relative to the tensor's largest gradient.
    finite_differences: the tape or manual gradient vs float64 central differences.
    fd_step: the central differences' step h per entry; directional_step: along a unit direction of all parameters.
    """
    exact: tuple[float, float] = (1e-9, 1e-12)
    float32: tuple[float, float] = (1e-3, 1e-6)
    finite_differences: tuple[float, float] = (1e-5, 1e-7)
    fd_step: float = 1e-6
    directional_step: float = 1e-5

    def manual_vs_tape(self, dtype: str) -> tuple[float, float]:
        return self.exact if dtype == "float64" else self.float32


DEFAULT_TOLERANCES = Tolerances()
FD_STEP = DEFAULT_TOLERANCES.fd_step
ONE_SIDED_TOLERANCE = (1e-3, 1e-5)  # one-sided slopes: truncation error h·|L''|/2
# A kink's jump at steps h and h/10 must exceed 10·eps·|L|/(h/10): 100× a one-sided slope's rounding error at h.
ROUNDING_MARGIN = 10


@dataclass
class Comparison:
    tensor: str
    methods: str  # e.g. "manual_vs_tape"
    entries: int
    max_abs_error: float
    max_rel_error: float  # max |a − b| / max(|a|, |b|, tiny)
    mean_abs_diff: float  # the book's check: mean |a − b|
    worst_over_tolerance: float  # max |a − b| / (atol + rtol·max(|a|, |b|)) off kinks: passes when <= 1
    kinks: int
    passed: bool
    worst_entry: list | None = None  # index (in the compared array) of the worst entry off kinks
    worst_values: list | None = None  # [a, b] there
    worst_tolerance: float | None = None  # atol + rtol·max(|a|, |b|) there
    kinks_crossed: dict | None = None  # {layer: kink entries whose smallest step crosses its activation's kinks}


def kink_layers(crossings: list[dict]) -> dict | None:
    """{layer: how many of the entries crossed its kinks}, from each kink entry's {layer: inputs crossing}."""
    counts = {}
    for found in crossings:
        for layer in found:
            counts[layer] = counts.get(layer, 0) + 1
    return counts or None


def compare(tensor: str, methods: str, a, b, rtol: float, atol: float, kinks=None) -> Comparison:
    """Entrywise agreement of two gradients; entries flagged in `kinks` are excluded from the verdict."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return Comparison(tensor, methods, int(b.size), np.inf, np.inf, np.inf, np.inf, 0, False)
    atol = np.broadcast_to(np.asarray(atol, np.float64), a.shape)  # one for all entries, or one each
    smooth = np.ones(a.shape, bool) if kinks is None else ~np.asarray(kinks)
    diff, scale = np.abs(a - b), np.maximum(np.abs(a), np.abs(b))
    rel = diff / np.maximum(scale, TINY)
    ratio = np.where(smooth, diff / (atol + rtol * scale), 0)
    ratio = np.where(np.isnan(ratio), np.inf, ratio)  # a NaN gradient is never a pass
    worst = float(ratio.max(initial=0))
    at = np.unravel_index(int(np.argmax(ratio)), ratio.shape) if ratio.size else None
    return Comparison(tensor, methods, int(a.size), float(diff.max(initial=0)), float(rel.max(initial=0)),
                      float(diff.mean()) if diff.size else 0.0, worst, int((~smooth).sum()), bool(worst <= 1),
                      None if at is None else [int(i) for i in at],
                      None if at is None else [float(a[at]), float(b[at])],
                      None if at is None else float(atol[at] + rtol * scale[at]))


def agree(a, b, rtol, atol) -> bool:
    return bool(abs(a - b) <= atol + rtol * max(abs(a), abs(b)))


class FiniteDifferences:
    """Derivatives of L(w) by differences of L around the point w (a NumPy array), each evaluation made once.
    kink_probe: the inputs of the model's piecewise activations as a function of w (kinks.KinkProbe), which lets a
    kink be seen inside the model where L alone cannot show it."""

    def __init__(self, loss_of, point: np.ndarray, step: float = FD_STEP, kink_probe: kinks.KinkProbe | None = None):
        """loss_of(w) -> L, or (L, a bound on L's rounding error at w) where the caller can bound it (a layer's
        check, layer_check.py); the bound widens the tolerance by what it allows the central difference."""
        self.loss_of, self.point, self.step, self.cache, self.rounding = loss_of, point, step, {}, {}
        self.kink_probe, self.kinks_crossed = kink_probe, {}  # index -> {layer: inputs crossing a kink at step h/100}
        self.probed = {}  # index -> whether its smallest step crosses a kink

    def loss(self, index, offset: float) -> float:
        key = (index, offset)
        if key not in self.cache:
            shifted = self.point.copy()
            shifted[index] += offset
            value = self.loss_of(shifted)
            value, self.rounding[key] = value if isinstance(value, tuple) else (value, 0.0)
            self.cache[key] = float(value)
        return self.cache[key]

    def central(self, index, step: float | None = None) -> float:
        h = step or self.step
        return (self.loss(index, h) - self.loss(index, -h)) / (2 * h)

    def rounding_error(self, index) -> float:
        """A bound on the central difference's error from rounding L at w ± h, where loss_of gives one (else 0)."""
        return (self.rounding.get((index, self.step), 0.0) + self.rounding.get((index, -self.step), 0.0)) / \
            (2 * self.step)

    def slopes(self, index, h: float) -> tuple[float, float]:
        """The right and left one-sided slopes (L(w ± h·e) − L(w)) / ±h."""
        return (self.loss(index, h) - self.loss(index, 0.0)) / h, (self.loss(index, 0.0) - self.loss(index, -h)) / h

    def at_kink(self, index, gradient: float, rtol: float, atol: float) -> bool:
        """Whether `gradient`'s disagreement with the central difference is a kink's (module docstring)."""
        small, smaller = self.step / 10, self.step / 100
        if any(agree(gradient, self.central(index, h), rtol, atol) for h in (small, smaller)):
            return True  # the ±h interval straddled the kink; a narrower one does not
        # Tried at three pairs of steps: from h, where a small jump stands out of the loss's rounding best (at h/100
        # the rounding of a large model's loss, ~10 eps·|L|/h, can swamp a jump of 1e-7), and nearer, so that another
        # kink between h/100 and h of the point does not hide this one.
        return any(self._jumps_steadily(index, h) for h in (self.step, small, smaller)) or self._crosses_kinks(index)

    def _crosses_kinks(self, index) -> bool:
        """Whether even the smallest step tried, h/100, moves an input of a piecewise activation onto or across its
        kink: then no step here measures the derivative, and the layers crossed are kept in `kinks_crossed`."""
        if self.kink_probe is None:
            return False
        if index in self.probed:  # an entry compared twice (manual and tape against the same differences)
            return self.probed[index]
        stepped = []
        for offset in (self.step / 100, -self.step / 100):
            stepped.append(self.point.copy())
            stepped[-1][index] += offset
        found = self.kink_probe.crossed(stepped)
        if found:
            self.kinks_crossed[index] = found
        self.probed[index] = bool(found)
        return self.probed[index]

    def _jumps_steadily(self, index, h: float) -> bool:
        """One-sided slopes at h and at h/10, each side's slope steady (a kink's sides are smooth, while rounding
        noise, from a model computing partly in float32, moves them by ~eps·|L|/h at every step), and between the
        sides a jump that does not shrink (a smooth function's, h·L'', shrinks tenfold) and stands out of both each
        side's own change and float64 rounding."""
        (right, left), (right_nearer, left_nearer) = self.slopes(index, h), self.slopes(index, h / 10)
        steady = agree(right, right_nearer, *ONE_SIDED_TOLERANCE) and agree(left, left_nearer, *ONE_SIDED_TOLERANCE)
        wobble = max(abs(right - right_nearer), abs(left - left_nearer))
        rounding = ROUNDING_MARGIN * np.finfo(np.float64).eps * max(abs(self.loss(index, 0.0)), 1.0) / (h / 10)
        jump, jump_nearer = abs(right - left), abs(right_nearer - left_nearer)
        return steady and jump_nearer >= jump / 2 and min(jump, jump_nearer) > max(10 * wobble, rounding)

    def compare(self, tensor: str, methods: str, indices, gradient, rtol, atol) -> Comparison:
        """`gradient` (entries at `indices`) against central differences, kink-aware."""
        fd = np.array([self.central(i) for i in indices])
        gradient = np.asarray(gradient, np.float64)
        # atol per entry: widened by ROUNDING_MARGIN × the rounding bound, where loss_of gives one
        atol = atol + ROUNDING_MARGIN * np.array([self.rounding_error(i) for i in indices])
        at_kinks = np.array([not agree(g, f, rtol, a) and self.at_kink(i, g, rtol, a)
                             for i, g, f, a in zip(indices, gradient, fd, atol, strict=True)], bool)
        result = compare(tensor, methods, gradient, fd, rtol, atol, at_kinks)
        result.kinks_crossed = kink_layers([self.kinks_crossed[i] for i in indices if i in self.kinks_crossed])
        if result.worst_entry is not None:  # a position among the sampled entries: name the tensor's own index
            result.worst_entry = list(indices[result.worst_entry[0]])
        return result


def central_differences(loss_of, point: np.ndarray, indices, step: float = FD_STEP) -> np.ndarray:
    """(L(w + h·e_i) − L(w − h·e_i)) / 2h for each index i, with `loss_of(w) -> float`: the one FD helper."""
    fd = FiniteDifferences(loss_of, np.array(point, np.float64), step)
    return np.array([fd.central(i) for i in indices])


def sample_indices(shape, count: int, rng) -> list[tuple]:
    """Every index of a small tensor, or `count` distinct random ones of a large one."""
    size = int(np.prod(shape))
    flat = np.arange(size) if size <= count else rng.choice(size, count, replace=False)
    return [tuple(int(i) for i in np.unravel_index(i, shape)) for i in flat]


def cast_batch(x, t, dtype):
    """Float inputs and targets in `dtype`; integer ones (token ids, labels) stay integers, which the model casts
    to its Input's dtype as Keras does."""
    def cast(values):
        cast = [np.asarray(v, dtype) if np.issubdtype(np.asarray(v).dtype, np.floating) else np.asarray(v)
                for v in as_list(values)]
        return cast if isinstance(values, (list, tuple)) else cast[0]
    return cast(x), cast(t)


def dropout_masks_for(model, x, training: bool, dropout_masks: dict | None, seed: int) -> dict | None:
    """The given masks; in training mode without them, a 0/1 keep-mask per Dropout layer of a graph model,
    drawn from `seed` (keep with probability 1 − rate), so that every method applies the same ones. (A
    subclassed model's dropout keeps Keras's own seed, fixed during the check.)"""
    graph = layer_graph(model)
    if dropout_masks is not None or not training or graph is None:
        return dropout_masks
    rng = np.random.default_rng([seed, 1])
    return draw_dropout_masks([node.layer for node in graph.nodes], len(as_list(x)[0]), rng) or None


class GradientProblem:
    """L(w) of one batch by Keras's own layers, as a function of the trainable values (nothing is assigned)."""

    def __init__(self, model, x, t, loss=None, training=False, dropout_masks=None):
        self.model, self.x, self.t, self.training, self.masks = model, x, t, training, dropout_masks
        self.losses = resolve_losses(model, loss)
        self.params = parameters(model)
        self.point = {name: ops.convert_to_numpy(v.value) for name, v in self.params.items()}
        self._point_tensors = {name: ops.convert_to_tensor(w) for name, w in self.point.items()}
        self._compiled_loss = autodiff.compiled(self.loss)

    def loss(self, values: dict | None = None):
        return reference_loss(self.model, self.x, self.t, self.masks, training=self.training, values=values,
                              losses=self.losses)

    def loss_value(self, values: dict) -> float:
        """L at the point with some parameters replaced, compiled: finite differences evaluate it many times."""
        return float(self._compiled_loss({**self._point_tensors, **values}))

    def loss_with(self, name: str):
        """w -> L with parameter `name` set to w, the others at the point: what finite differences vary."""
        return lambda w: self.loss_value({name: w})

    def kinked_inputs(self, values: dict | None = None) -> dict:
        """{layer: the inputs of its piecewise activation} in a forward with some parameters replaced (kinks.py)."""
        values = {name: ops.convert_to_tensor(w) for name, w in (values or {}).items()}
        return kinks.kinked_inputs(self.model, lambda: self.loss({**self._point_tensors, **values}))

    def kink_probe(self, values_at) -> kinks.KinkProbe | None:
        """For FiniteDifferences that vary w: the kinked inputs at the parameters `values_at(w)` (a dict); None for a
        model without piecewise activations."""
        points = kinks.kink_points(self.model)
        if not points:
            return None
        if not hasattr(self, "_kinked_at_point"):  # the same point for every tensor and direction
            self._kinked_at_point = self.kinked_inputs()
        return kinks.KinkProbe(points, self._kinked_at_point, lambda w: self.kinked_inputs(values_at(w)))

    def tape(self) -> tuple[float, dict[str, np.ndarray]]:
        value, grads = autodiff.value_and_gradients(self.loss, self.point, compile=True)
        return float(value), {name: ops.convert_to_numpy(grads[name]) for name in self.params}


def manual_or_reason(model, loss, training) -> tuple[ManualTwin | None, list[str]]:
    try:
        return ManualTwin(model, loss, training), []
    except ManualUnavailable as unavailable:
        return None, unavailable.missing


def manual_gradients(twin: ManualTwin | None, x, t, dropout_masks) -> tuple[float | None, dict | None, str | None]:
    """The twin's loss and gradients, or the error of a formula that raised (FormulaError: the manual method fails
    there, and the other methods still run)."""
    if twin is None:
        return None, None, None
    try:
        with autodiff.not_recorded():
            return *twin.loss_and_gradients(x, t, dropout_masks, compile=autodiff.once), None
    except FormulaError as error:
        return None, None, str(error)


def tape_gradients(model, x, t, dropout_masks=None, loss=None, training=False) -> tuple[float, dict[str, np.ndarray]]:
    return GradientProblem(model, x, t, loss, training, dropout_masks).tape()


@dataclass
class Float64Gradients:
    """A float64 check's problem L(w) and its tape and manual gradients: what the three-way and the directional check
    both compute, computed once when check_gradients runs both (on JAX each is a compile)."""
    problem: GradientProblem
    dropout_masks: dict | None
    tape_loss: float
    tape: dict
    twin: ManualTwin | None
    missing: list
    manual_loss: float | None
    manual: dict | None
    manual_error: str | None = None  # a formula that raised (FormulaError)


def float64_gradients(model, x, t, dropout_masks=None, seed=0, loss=None, training=False) -> Float64Gradients:
    dropout_masks = dropout_masks_for(model, x, training, dropout_masks, seed)
    loss = resolve_losses(model, loss)  # the model's own: a copy's compiled loss is re-made from its config
    model64 = checked_in(model, "float64")
    problem = GradientProblem(model64, *cast_batch(x, t, "float64"), loss, training, dropout_masks)
    tape_loss, tape = problem.tape()
    twin, missing = manual_or_reason(model64, loss, training)
    manual_loss, manual, manual_error = manual_gradients(twin, problem.x, problem.t, dropout_masks)
    return Float64Gradients(problem, dropout_masks, tape_loss, tape, twin, missing, manual_loss, manual, manual_error)


def three_way_check(model, x, t, dropout_masks=None, dtype="float64", fd_entries=32, seed=0, loss=None,
                    training=False, computed: Float64Gradients | None = None, fd_tensors=None,
                    tolerances: Tolerances = DEFAULT_TOLERANCES) -> dict:
    """Manual vs tape (in `dtype`) and both vs float64 central differences, per weight tensor. Without a
    manual formula for every layer, tape vs central differences alone, and `manual` says what is missing.
    computed: the float64 gradients of this model and batch, where the caller has them. fd_tensors: the tensors
    whose entries central differences of the whole model sample (None: every one)."""
    rng = np.random.default_rng(seed)
    computed = computed or float64_gradients(model, x, t, dropout_masks, seed, loss, training)
    problem64, dropout_masks = computed.problem, computed.dropout_masks
    if dtype == "float64":
        tape_loss, tape, twin, missing = computed.tape_loss, computed.tape, computed.twin, computed.missing
        manual_loss, manual, manual_error = computed.manual_loss, computed.manual, computed.manual_error
    else:
        model_in_dtype = checked_in(model, dtype)
        x_in, t_in = cast_batch(x, t, dtype)
        tape_loss, tape = GradientProblem(model_in_dtype, x_in, t_in, problem64.losses, training,
                                          dropout_masks).tape()
        twin, missing = manual_or_reason(model_in_dtype, problem64.losses, training)
        manual_loss, manual, manual_error = manual_gradients(twin, x_in, t_in, dropout_masks)
    comparisons = []
    for name in problem64.params:
        rtol, atol = tolerances.manual_vs_tape(dtype)
        if dtype != "float64":
            atol *= float(np.abs(tape[name]).max(initial=0))
        if manual is not None:
            comparisons.append(compare(name, "manual_vs_tape", manual[name], tape[name], rtol, atol))
        if fd_tensors is not None and name not in fd_tensors:
            continue
        indices = sample_indices(problem64.point[name].shape, fd_entries, rng)
        fd = FiniteDifferences(problem64.loss_with(name), problem64.point[name], tolerances.fd_step,
                               kink_probe=problem64.kink_probe(lambda w, name=name: {name: w}))
        if dtype == "float64":
            rtol, atol = tolerances.finite_differences  # else the float32 rtol, atol set above
        for method, grads in (("manual", manual), ("tape", tape)):
            if grads is not None:
                grad = grads[name]
                picked = [grad[i] for i in indices] if grad.shape == problem64.point[name].shape else grad
                comparisons.append(fd.compare(name, f"{method}_vs_finite_differences", indices, picked, rtol, atol))
    return {"dtype": dtype, "training": training, "dropout_masks": sorted(dropout_masks or {}),
            "losses": [f.name if f.weight == 1 else f"{f.weight:g}·{f.name}" for f in problem64.losses],
            "penalties": penalty_terms(problem64.model, problem64.x, training, dropout_masks),
            "manual": {"available": twin is not None, "missing": missing, "error": manual_error},
            "manual_loss": manual_loss, "tape_loss": tape_loss,
            "passed": manual_error is None and all(c.passed for c in comparisons),
            "comparisons": [asdict(c) for c in comparisons]}


def directional_check(model, x, t, dropout_masks=None, directions=5, seed=0, loss=None,
                      training=False, computed: Float64Gradients | None = None,
                      forward_directions: int | None = None, tolerances: Tolerances = DEFAULT_TOLERANCES) -> dict:
    """Full coverage at the cost of a few forwards: for random unit directions v over all parameters,
    vᵀ∇L from the tape and the manual twin against (L(w + hv) − L(w − hv)) / 2h and against the
    forward-mode JVP. float64. computed: the float64 gradients of this model and batch, where the caller has them.
    forward_directions: how many of the directions (the first) forward mode takes (None: all); an uncompiled JVP of
    a large model costs several compiled forwards, and each layer's forward mode is checked alone (layer_check.py)."""
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    computed = computed or float64_gradients(model, x, t, dropout_masks, seed, loss, training)
    problem, tape, twin, missing, manual = (computed.problem, computed.tape, computed.twin, computed.missing,
                                            computed.manual)
    rows, on_kinks = [], []
    forward_mode = {"available": True, "method": autodiff.forward_mode()}
    rtol_fd, atol_fd = tolerances.finite_differences
    for k in range(directions):
        v = {name: rng.standard_normal(w.shape) for name, w in problem.point.items()}
        norm = np.sqrt(sum(np.sum(d**2) for d in v.values()))
        v = {name: d / norm for name, d in v.items()}
        def moved(s, v=v):
            return {n: problem.point[n] + float(s) * v[n] for n in v}
        along = FiniteDifferences(lambda s: problem.loss_value(moved(s)), np.zeros(()), tolerances.directional_step,
                                  kink_probe=problem.kink_probe(moved))
        row = {"tape": float(sum(np.sum(v[n] * tape[n]) for n in v)), "finite_differences": along.central(())}
        if forward_mode["available"] and (forward_directions is None or k < forward_directions):
            try:
                row["forward_mode_jvp"] = float(autodiff.jvp(problem.loss, problem.point, v)[1])
            except autodiff.ForwardModeUnavailable as unavailable:
                forward_mode = {"available": False, "reason": str(unavailable)}
        if manual is not None:
            row["manual"] = float(sum(np.sum(v[n] * manual[n]) for n in v))
        row["kink"] = not agree(row["tape"], row["finite_differences"], rtol_fd, atol_fd) and \
            along.at_kink((), row["tape"], rtol_fd, atol_fd)
        if () in along.kinks_crossed:
            row["kinks_crossed"] = along.kinks_crossed[()]
        rows.append(row)
        on_kinks.append(row["kink"])
    rtol, atol = tolerances.exact
    column = {key: [row[key] for row in rows if key in row] for key in rows[0]}
    checks = {"tape_vs_finite_differences": compare("all", "tape_vs_finite_differences", column["tape"],
                                                    column["finite_differences"], rtol_fd, atol_fd, on_kinks)}
    if forward_mode["available"]:
        tape_along_jvp = column["tape"][:len(column["forward_mode_jvp"])]
        checks = {"jvp_vs_tape": compare("all", "jvp_vs_tape", column["forward_mode_jvp"], tape_along_jvp, rtol, atol),
                  **checks}
    if manual is not None:
        checks = {"manual_vs_tape": compare("all", "manual_vs_tape", column["manual"], column["tape"], rtol, atol),
                  **checks}
    # Forward and reverse mode are exact derivatives of one function: a disagreement beyond float64 rounding but
    # within float32's says the model computes partly below float64, which finite differences meet as noise.
    jvp = checks.get("jvp_vs_tape")
    below_float64 = jvp is not None and not jvp.passed and jvp.max_rel_error < DEFAULT_TOLERANCES.float32[0]
    return {"parameters": int(sum(w.size for w in problem.point.values())), "directions": rows,
            "manual": {"available": twin is not None, "missing": missing}, "forward_mode": forward_mode,
            "checks": {k: asdict(c) for k, c in checks.items()}, "passed": all(c.passed for c in checks.values()),
            "below_float64": below_float64, "seconds": round(time.perf_counter() - start, 2)}
