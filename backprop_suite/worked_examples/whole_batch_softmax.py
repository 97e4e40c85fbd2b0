"""C001-3: the note's TwoLayerNet(2, 3, 3) run printed Loss 2.1972294 and b2 gradients ≈ −0.222 each.

Finding: both come from a softmax normalised over the whole 3×3 batch (y ≈ 1/9 everywhere, so
L ≈ ln 9 and db2 = Σ_n (y − t)/N ≈ (3/9 − 1)/3 = −2/9). Per row, y ≈ 1/3: L ≈ ln 3 and the b2
gradient sums to 0. And the book's backward (y − t)/N is not the gradient of that whole-batch
forward, which the gradient check detects.
"""
import functools

import numpy as np
import tensorflow as tf

from backprop_suite import artifacts
from backprop_suite.models import build_model
from backprop_suite.worked_examples.result import WorkedResult
from gradcheck.dtypes import with_dtype
from gradcheck.manual.step import ScalarStep
from gradcheck.manual.twin import ManualTwin
from gradcheck.methods import DEFAULT_TOLERANCES, central_differences, compare, sample_indices
from gradcheck.parameters import parameters

NOTE_TARGETS = [[0, 1, 0], [0, 0, 1], [1, 0, 0]]
NOTE_LOSS = 2.1972294090761904


class WholeBatchSoftmaxWithLoss(ScalarStep):
    """The note's SoftmaxWithLoss as it ran: softmax over all N·K logits at once, backward (y − t)/N."""

    def forward(self, u, t):
        self.t, self.n = t, tf.cast(tf.shape(u)[0], u.dtype)
        self.y = tf.exp(u) / tf.reduce_sum(tf.exp(u))  # normalised over the whole batch (the bug)
        return -tf.reduce_sum(t * tf.math.log(self.y)) / self.n

    def backward(self):
        return (self.y - self.t) / self.n  # the book's per-row formula, kept by the note


def consistency(twin: ManualTwin, x, t) -> tuple[bool, list[dict]]:
    """Does the twin's backward match central differences of its own forward, for every parameter?"""
    _, grads = twin.loss_and_gradients(x, t)
    rtol, atol = DEFAULT_TOLERANCES.finite_differences
    rows = []
    for name, variable in parameters(twin.model).items():
        indices = sample_indices(variable.shape, 64, np.random.default_rng(0))
        fd = central_differences(lambda w, name=name: float(twin.forward(x, t, values={name: w})), variable.numpy(),
                                 indices)
        rows.append(vars(compare(name, "backward_vs_own_forward", [grads[name][i] for i in indices], fd, rtol, atol)))
    return all(r["passed"] for r in rows), rows


def whole_batch_softmax(seed: int = 0, weight_init_std: float = 0.01) -> WorkedResult:
    rng = np.random.default_rng(seed)
    x, t = rng.random((3, 2)), np.array(NOTE_TARGETS, np.float64)  # the note: x = rand(3, 2)
    model = build_model("two_layer_net", input_size=2, hidden_size=3, output_size=3, weight_init_std=weight_init_std)
    model.set_weights([rng.standard_normal(w.shape) * weight_init_std if w.ndim == 2 else np.zeros(w.shape)
                       for w in model.get_weights()])  # the book's init: W ~ N(0, std²), b = 0
    model = with_dtype(model, "float64")
    per_row = ManualTwin(model)
    note = ManualTwin(model)
    note.loss_steps = [(output, WholeBatchSoftmaxWithLoss(), weight) for output, _, weight in note.loss_steps]

    note_loss, note_grads = note.loss_and_gradients(x, t)
    row_loss, row_grads = per_row.loss_and_gradients(x, t)
    note_consistent, note_rows = consistency(note, x, t)
    row_consistent, row_rows = consistency(per_row, x, t)
    b2_note, b2_row = note_grads["affine2/bias"], row_grads["affine2/bias"]
    metrics = {"whole_batch_loss": note_loss, "whole_batch_loss_minus_ln9": float(note_loss - np.log(9)),
               "per_row_loss": row_loss, **{f"whole_batch_db2_{i}": float(g) for i, g in enumerate(b2_note)},
               "per_row_db2_sum": float(b2_row.sum()),
               "note_backward_consistent_with_its_forward": int(note_consistent),
               "per_row_backward_consistent_with_its_forward": int(row_consistent)}
    fails = [r["tensor"] for r in note_rows if not r["passed"]]
    text = "\n".join([
        "C001-3, TwoLayerNet(2, 3, 3), x = rand(3, 2), t = " + str(NOTE_TARGETS) + f", weight std {weight_init_std}",
        f"note printed:            Loss {NOTE_LOSS}, b2 gradient ≈ [−0.222, −0.222, −0.222]",
        f"whole-batch softmax:     Loss {note_loss:.10f} (ln 9 = {np.log(9):.10f}), "
        f"b2 gradient {np.array2string(b2_note, precision=4)} (−2/9 = {-2 / 9:.4f})",
        f"per-row softmax:         Loss {row_loss:.10f} (ln 3 = {np.log(3):.10f}), "
        f"b2 gradient {np.array2string(b2_row, precision=4)}, sum {b2_row.sum():.1e}",
        f"gradient check of the note's backward against its own forward: {'PASS' if note_consistent else 'FAIL'}"
        + (f" (inconsistent at {', '.join(fails)})" if fails else ""),
        f"gradient check of the per-row backward against its own forward: {'PASS' if row_consistent else 'FAIL'}",
        "verdict: the note's numbers come from a whole-batch softmax; its backward formula does not match it.",
    ])
    figure = functools.partial(plot, note_loss, row_loss, b2_note, b2_row)
    return WorkedResult(metrics, text, {"whole_batch_softmax.png": figure},
                        details={"note_consistency": note_rows, "per_row_consistency": row_rows},
                        captions={"whole_batch_softmax.png": CAPTION})


def plot(note_loss, row_loss, b2_note, b2_row, path) -> None:
    import matplotlib.pyplot as plt

    figure, (losses, grads) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    names = ["note printed", "whole-batch softmax", "per-row softmax"]
    bars = losses.bar(names, [NOTE_LOSS, note_loss, row_loss], color=["gray", "tab:red", "tab:blue"])
    losses.bar_label(bars, fmt="%.5f")
    for value, label in ((np.log(9), "ln 9"), (np.log(3), "ln 3")):
        losses.axhline(value, color="black", linestyle=":", linewidth=1)
        losses.annotate(label, (2.45, value), va="bottom", ha="right")
    losses.set(ylabel="loss", title="Loss: the note's number is ln 9, not ln 3")
    index, width = np.arange(3), 0.27
    for k, (values, label, color) in enumerate(((np.full(3, -0.222), "note printed (≈)", "gray"),
                                                (b2_note, "whole-batch softmax", "tab:red"),
                                                (b2_row, "per-row softmax", "tab:blue"))):
        grads.bar(index + (k - 1) * width, values, width, label=label, color=color)
    grads.axhline(-2 / 9, color="black", linestyle=":", linewidth=1)
    grads.annotate("−2/9", (2.45, -2 / 9), va="top", ha="right")
    grads.axhline(0, color="black", linewidth=0.8)
    grads.set(xticks=index, xticklabels=["∂L/∂b2[0]", "∂L/∂b2[1]", "∂L/∂b2[2]"], ylabel="gradient",
              title="b2 gradient: −2/9 each only when whole-batch")
    grads.legend(fontsize=8, loc="lower left")
    artifacts.save_figure(figure, path)


CAPTION = ("What to look for: the note's printed loss and b2 gradients (gray) match the softmax taken over the "
           "whole batch (red: ln 9, −2/9 each), not the per-row softmax its formulas describe (blue: ln 3, "
           "gradients summing to 0) — the discrepancy of C001-3.")
