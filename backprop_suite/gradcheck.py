"""Three gradients per weight tensor — manual backprop, tf.GradientTape, central differences — compared.

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
A finite-difference entry whose ±h step changes a ReLU side or a max-pool arg-max is a kink: the
loss is not differentiable in between, so it is reported as such and not counted as a failure.
"""
import time
from dataclasses import asdict, dataclass

import numpy as np
import tensorflow as tf

from backprop_suite.manual.twin import ManualTwin, parameters, reference_loss, with_dtype

FD_STEP = 1e-6
TINY = 1e-300  # floor of the relative error's denominator
TOLERANCES = {"manual_vs_tape/float64": (1e-9, 1e-12), "manual_vs_tape/float32": (1e-3, 1e-6),
              "vs_finite_differences": (1e-5, 1e-7)}


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


def compare(tensor: str, methods: str, a, b, rtol: float, atol: float, kinks=None) -> Comparison:
    """Entrywise agreement of two gradients; entries flagged in `kinks` are excluded from the verdict."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return Comparison(tensor, methods, int(b.size), np.inf, np.inf, np.inf, np.inf, 0, False)
    smooth = np.ones(a.shape, bool) if kinks is None else ~np.asarray(kinks)
    diff, scale = np.abs(a - b), np.maximum(np.abs(a), np.abs(b))
    rel = diff / np.maximum(scale, TINY)
    worst = float(np.max(diff / (atol + rtol * scale), where=smooth, initial=0))
    return Comparison(tensor, methods, int(a.size), float(diff.max(initial=0)), float(rel.max(initial=0)),
                      float(diff.mean()) if diff.size else 0.0, worst, int((~smooth).sum()), bool(worst <= 1))


def central_differences(loss_fn, variable, indices, step: float = FD_STEP, pattern_fn=None):
    """(L(w + h·e_i) − L(w − h·e_i)) / 2h for each index i of `variable`; and which i straddle a kink."""
    original = np.array(variable.numpy())
    base_pattern = pattern_fn() if pattern_fn else None
    values, kinks = [], []
    for index in indices:
        losses, patterns = [], []
        for sign in (1, -1):
            shifted = original.copy()
            shifted[index] += sign * step
            variable.assign(shifted)
            losses.append(float(loss_fn()))
            patterns.append(pattern_fn() if pattern_fn else None)
        values.append((losses[0] - losses[1]) / (2 * step))
        kinks.append(pattern_fn is not None and not (np.array_equal(patterns[0], base_pattern)
                                                     and np.array_equal(patterns[1], base_pattern)))
    variable.assign(original)
    return np.array(values), np.array(kinks)


def sample_indices(shape, count: int, rng) -> list[tuple]:
    """Every index of a small tensor, or `count` distinct random ones of a large one."""
    size = int(np.prod(shape))
    flat = np.arange(size) if size <= count else rng.choice(size, count, replace=False)
    return [np.unravel_index(i, shape) for i in flat]


def tape_gradients(model, x, t, dropout_masks=None, loss=None) -> tuple[float, dict[str, np.ndarray]]:
    variables = parameters(model)
    with tf.GradientTape() as tape:
        value = reference_loss(model, x, t, dropout_masks, loss)
    grads = tape.gradient(value, list(variables.values()))
    return float(value), {name: g.numpy() for name, g in zip(variables, grads, strict=True)}


def three_way_check(model, x, t, dropout_masks=None, dtype="float64", fd_entries=32, seed=0, loss=None) -> dict:
    """Manual vs tape (in `dtype`) and both vs float64 central differences, per weight tensor."""
    rng = np.random.default_rng(seed)
    model_in_dtype, model64 = with_dtype(model, dtype), with_dtype(model, "float64")
    x_in, t_in = (np.asarray(a, dtype) for a in (x, t))
    manual_loss, manual = ManualTwin(model_in_dtype, dtype, loss).loss_and_gradients(x_in, t_in, dropout_masks)
    tape_loss, tape = tape_gradients(model_in_dtype, x_in, t_in, dropout_masks, loss)
    twin64 = ManualTwin(model64, "float64", loss)
    comparisons = []
    for name, variable in parameters(model64).items():
        rtol, atol = TOLERANCES[f"manual_vs_tape/{dtype}"]
        if dtype != "float64":
            atol *= float(np.abs(tape[name]).max(initial=0))
        comparisons.append(compare(name, "manual_vs_tape", manual[name], tape[name], rtol, atol))
        indices = sample_indices(variable.shape, fd_entries, rng)
        fd, kinks = central_differences(lambda: reference_loss(model64, x, t, dropout_masks, loss), variable, indices,
                                        pattern_fn=lambda: twin64.kink_pattern(x, t, dropout_masks))
        if dtype == "float64":
            rtol, atol = TOLERANCES["vs_finite_differences"]  # else the float32 rtol, atol set above
        for method, grad in (("manual", manual[name]), ("tape", tape[name])):
            picked = np.array([grad[i] for i in indices]) if grad.shape == variable.shape else grad
            comparisons.append(compare(name, f"{method}_vs_finite_differences", picked, fd, rtol, atol, kinks))
    return {"dtype": dtype, "manual_loss": manual_loss, "tape_loss": tape_loss,
            "passed": all(c.passed for c in comparisons), "comparisons": [asdict(c) for c in comparisons]}


def directional_check(model, x, t, dropout_masks=None, directions=5, step=1e-5, seed=0, loss=None) -> dict:
    """Full coverage at the cost of a few forwards: for random unit directions v over all parameters,
    vᵀ∇L from the tape and the manual twin against (L(w + hv) − L(w − hv)) / 2h and against the
    forward-mode JVP (tf.autodiff.ForwardAccumulator). float64."""
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    model64 = with_dtype(model, "float64")
    twin = ManualTwin(model64, "float64", loss)
    variables = parameters(model64)
    _, manual = twin.loss_and_gradients(x, t, dropout_masks)
    _, tape = tape_gradients(model64, x, t, dropout_masks, loss)
    originals = {name: v.numpy() for name, v in variables.items()}
    base_pattern = twin.kink_pattern(x, t, dropout_masks)

    def loss_at(v, scale):
        for name, variable in variables.items():
            variable.assign(originals[name] + scale * v[name])
        value = float(reference_loss(model64, x, t, dropout_masks, loss))
        return value, twin.kink_pattern(x, t, dropout_masks)

    rows = []
    for _ in range(directions):
        v = {name: rng.standard_normal(w.shape) for name, w in originals.items()}
        norm = np.sqrt(sum(np.sum(d**2) for d in v.values()))
        v = {name: d / norm for name, d in v.items()}
        (plus, pattern_plus), (minus, pattern_minus) = loss_at(v, step), loss_at(v, -step)
        loss_at(v, 0.0)
        with tf.autodiff.ForwardAccumulator([var.value for var in variables.values()],
                                            [tf.constant(v[name]) for name in variables]) as accumulator:
            value = reference_loss(model64, x, t, dropout_masks, loss)
        rows.append({
            "tape": float(sum(np.sum(v[n] * tape[n]) for n in variables)),
            "manual": float(sum(np.sum(v[n] * manual[n]) for n in variables)),
            "finite_differences": (plus - minus) / (2 * step),
            "forward_mode_jvp": float(accumulator.jvp(value)),
            "kink": not (np.array_equal(pattern_plus, base_pattern) and np.array_equal(pattern_minus, base_pattern)),
        })
    rtol_fd, atol_fd = TOLERANCES["vs_finite_differences"]
    rtol, atol = TOLERANCES["manual_vs_tape/float64"]
    column = {key: [row[key] for row in rows] for key in rows[0]}
    checks = {
        "manual_vs_tape": compare("all", "manual_vs_tape", column["manual"], column["tape"], rtol, atol),
        "jvp_vs_tape": compare("all", "jvp_vs_tape", column["forward_mode_jvp"], column["tape"], rtol, atol),
        "tape_vs_finite_differences": compare("all", "tape_vs_finite_differences", column["tape"],
                                              column["finite_differences"], rtol_fd, atol_fd, column["kink"]),
    }
    return {"parameters": int(sum(w.size for w in originals.values())), "directions": rows,
            "checks": {k: asdict(c) for k, c in checks.items()}, "passed": all(c.passed for c in checks.values()),
            "seconds": round(time.perf_counter() - start, 2)}
