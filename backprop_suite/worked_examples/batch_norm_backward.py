"""Beyond the notes: batch normalisation's backward (ゼロから作るDL ch. 6.3), the book's step-by-step derivation
through the batch mean and variance, against the suite's compact manual formula, the tape on Keras's
BatchNormalization (training mode) and float64 central differences; and what is lost by treating the
batch statistics as constants."""
import functools

import keras
import numpy as np
import tensorflow as tf

from backprop_suite import artifacts
from backprop_suite.worked_examples.result import WorkedResult
from gradcheck.manual.table import manual_steps
from gradcheck.methods import central_differences, sample_indices


def book_backward(x, gamma, dout, epsilon):
    """The book's computational graph, node by node (common/layers.py BatchNormalization): μ, x_c, σ², std, x̂."""
    n = x.shape[0]
    mu = x.mean(axis=0)
    xc = x - mu
    var = np.mean(xc**2, axis=0)
    std = np.sqrt(var + epsilon)
    xn = xc / std
    dbeta = dout.sum(axis=0)  # ∂L/∂β = Σ_n dout
    dgamma = np.sum(xn * dout, axis=0)  # ∂L/∂γ = Σ_n x̂·dout
    dxn = gamma * dout
    dxc = dxn / std  # the direct path x_c → x̂
    dstd = -np.sum((dxn * xc) / (std * std), axis=0)  # x̂ = x_c / std
    dvar = 0.5 * dstd / std  # std = √(σ² + ε)
    dxc += (2.0 / n) * xc * dvar  # σ² = mean(x_c²)
    dmu = np.sum(dxc, axis=0)  # x_c = x − μ
    dx = dxc - dmu / n  # μ = mean(x)
    return dx, dgamma, dbeta


def relative(a, b) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def batch_norm_backward(batch_size: int = 8, features: int = 5, epsilon: float = 1e-3, seed: int = 0) -> WorkedResult:
    rng = np.random.default_rng(seed)
    x = rng.normal(2.0, 3.0, (batch_size, features))
    dout = rng.standard_normal((batch_size, features))
    layer = keras.layers.BatchNormalization(epsilon=epsilon, dtype="float64")
    layer.build((None, features))
    gamma, beta = rng.uniform(0.5, 2.0, features), rng.standard_normal(features)
    layer.gamma.assign(gamma)
    layer.beta.assign(beta)

    def keras_loss(x_value, replaced=()):  # L = Σ dout ⊙ BN(x), training mode; moving statistics untouched
        with keras.StatelessScope(state_mapping=list(replaced)):
            return tf.reduce_sum(dout * layer(x_value, training=True))

    book_dx, book_dgamma, book_dbeta = book_backward(x, gamma, dout, epsilon)
    [manual] = manual_steps(layer, training=True)
    manual.forward(tf.constant(x), gamma=layer.gamma.value, beta=layer.beta.value)
    compact_dx = manual.backward(tf.constant(dout)).numpy()
    x_var = tf.Variable(x)
    with tf.GradientTape(persistent=True) as tape:
        value = keras_loss(x_var)
    tape_dx = tape.gradient(value, x_var).numpy()
    tape_dgamma, tape_dbeta = (tape.gradient(value, v).numpy() for v in (layer.gamma, layer.beta))
    indices = sample_indices(x.shape, x.size, rng)  # every entry: the batch is small
    fd_dx = central_differences(lambda v: float(keras_loss(v)), x, indices).reshape(x.shape)
    naive_dx = gamma * dout / np.sqrt(x.var(axis=0) + epsilon)  # batch statistics treated as constants

    metrics = {"book_vs_tape_dx": relative(book_dx, tape_dx),
               "book_vs_tape_dgamma": relative(book_dgamma, tape_dgamma),
               "book_vs_tape_dbeta": relative(book_dbeta, tape_dbeta),
               "compact_vs_book_dx": relative(compact_dx, book_dx),
               "tape_vs_finite_differences_dx": relative(tape_dx, fd_dx),
               "constant_statistics_vs_tape_dx": relative(naive_dx, tape_dx),
               "dx_column_sums_max": float(np.max(np.abs(book_dx.sum(axis=0))))}
    text = "\n".join([
        f"Batch normalisation, training mode, batch {batch_size} × {features} features, ε = {epsilon}, float64.",
        "dx = ∂L/∂x for L = Σ dout ⊙ BN(x), max relative difference to the tape on Keras's layer:",
        f"  the book's node-by-node backward (μ, x_c, σ², std, x̂):  {metrics['book_vs_tape_dx']:.1e}",
        f"  the suite's compact formula inv_std/m·(m·dx̂ − Σdx̂ − x̂·Σ(dx̂·x̂)) vs the book's:  "
        f"{metrics['compact_vs_book_dx']:.1e}",
        f"  central differences (every entry) vs the tape:  {metrics['tape_vs_finite_differences_dx']:.1e}",
        f"  dγ, dβ by the book vs the tape:  {metrics['book_vs_tape_dgamma']:.1e}, {metrics['book_vs_tape_dbeta']:.1e}",
        f"  treating μ and σ² as constants (dx = γ·dout/std):  {metrics['constant_statistics_vs_tape_dx']:.2f} — wrong",
        f"Each column of dx sums to zero (|Σ| ≤ {metrics['dx_column_sums_max']:.1e}): shifting a feature for the whole "
        "batch shifts its mean too, and the normalised output does not move."])
    figure = functools.partial(draw, tape_dx, book_dx, fd_dx, naive_dx)
    return WorkedResult(metrics, text, {"batch_norm_backward.png": figure},
                        details={"dx_book": book_dx.tolist(), "dx_tape": tape_dx.tolist()},
                        captions={"batch_norm_backward.png": CAPTION})


CAPTION = ("What to look for: the book's node-by-node dx and the compact formula sit on the diagonal with the "
           "tape (differences at rounding level) and with finite differences (truncation level), while treating "
           "the batch mean and variance as constants is off by O(1).")


def draw(tape_dx, book_dx, fd_dx, naive_dx, path) -> None:
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=100)
    reference = tape_dx.ravel()
    for values, label, marker in ((book_dx, "book's backward (through μ and σ²)", "o"),
                                  (fd_dx, "central differences", "x"), (naive_dx, "μ, σ² as constants", "s")):
        left.scatter(reference, values.ravel(), label=label, marker=marker, s=22, alpha=0.8)
    limits = [reference.min(), reference.max()]
    left.plot(limits, limits, color="gray", linewidth=0.8)
    left.set(xlabel="dx by the tape (Keras BatchNormalization)", ylabel="dx by the other method",
             title="every entry of dx: on the diagonal = agrees")
    left.legend(fontsize=8)
    for values, label in ((book_dx, "book's backward"), (fd_dx, "central differences"),
                          (naive_dx, "μ, σ² as constants")):
        right.semilogy(np.sort(np.abs(values - tape_dx).ravel()) + 1e-18, label=label)
    right.set(xlabel="entries of dx, sorted (exact zeros drawn at 1e-18)", ylabel="|difference from the tape|",
              title="|difference|: rounding, truncation, or wrong")
    right.legend(fontsize=8)
    figure.suptitle("Batch normalisation backward (beyond the notes; the book's ch. 6.3)")
    figure.tight_layout()
    artifacts.save_figure(figure, path)
