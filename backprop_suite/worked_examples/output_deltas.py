"""C004-1..4: for each output pairing, δ = ∂E/∂u = y − d per sample, also at logits of ±50; σ′ = y(1 − y)."""
import functools

import keras
import numpy as np
import tensorflow as tf

from backprop_suite import artifacts
from backprop_suite.worked_examples.result import WorkedResult
from gradcheck.manual import losses
from gradcheck.methods import central_differences

# pairing -> (the suite's fused layer, Keras's per-sample loss E_n(d, u) from the logits u, target kind)
PAIRINGS = {
    "regression: identity + squared error (C004-1)": (
        losses.HalfSquaredError, lambda d, u: 0.5 * tf.reduce_sum((u - d) ** 2, axis=-1), "real"),
    "binary: logistic + negative log-likelihood (C004-2)": (
        losses.SigmoidBinaryCrossEntropy,  # Keras averages over the K units; E_n sums them
        lambda d, u: keras.losses.binary_crossentropy(d, u, from_logits=True) * u.shape[-1], "binary"),
    "multiclass: softmax + cross-entropy (C004-3)": (
        losses.SoftmaxCrossEntropy, lambda d, u: keras.losses.categorical_crossentropy(d, u, from_logits=True),
        "onehot"),
}


def output_deltas(samples: int = 200, classes: int = 5, logit_scale: float = 50.0, seed: int = 0) -> WorkedResult:
    rng = np.random.default_rng(seed)
    # Half the rows ordinary logits, half saturated at ±logit_scale, where a naive log(y) overflows.
    u = np.concatenate([rng.standard_normal((samples // 2, classes)) * 3,
                        rng.choice([-1.0, 1.0], (samples - samples // 2, classes)) * logit_scale])
    metrics, lines = {}, [f"C004: δ = ∂E/∂u against y − d, {samples} samples × {classes} outputs, "
                          f"half of them with logits ±{logit_scale:g}", ""]
    shown = {}  # pairing -> (tape δ, y − d), for the figure
    for number, (pairing, (layer_class, keras_loss, kind)) in enumerate(PAIRINGS.items(), 1):
        d = {"real": rng.standard_normal(u.shape), "binary": rng.integers(0, 2, u.shape).astype(float),
             "onehot": np.eye(classes)[rng.integers(0, classes, samples)]}[kind]
        logits = tf.Variable(u)
        with tf.GradientTape() as tape:
            total = tf.reduce_sum(keras_loss(d, logits))  # Σ_n E_n: its gradient row n is sample n's δ
        delta_tape = tape.gradient(total, logits).numpy()
        layer = layer_class()
        layer.forward(tf.constant(u), tf.constant(d))
        y = layer.y.numpy()
        # The fused layer's backward is (y − d)/count for a batch mean; times count, the per-sample δ.
        count = u.size if layer_class is losses.SigmoidBinaryCrossEntropy else samples
        delta_layer = layer.backward().numpy() * count
        finite = np.isfinite(total.numpy()) and np.all(np.isfinite(delta_tape)) and np.all(np.isfinite(delta_layer))
        metrics[f"pairing{number}_max_abs_tape_vs_y_minus_d"] = float(np.abs(delta_tape - (y - d)).max())
        metrics[f"pairing{number}_max_abs_layer_vs_tape"] = float(np.abs(delta_layer - delta_tape).max())
        metrics[f"pairing{number}_nonfinite"] = int(not finite)
        shown[pairing] = (delta_tape, y - d)
        tape_error = metrics[f"pairing{number}_max_abs_tape_vs_y_minus_d"]
        layer_error = metrics[f"pairing{number}_max_abs_layer_vs_tape"]
        lines.append(f"{pairing}: max |tape δ − (y − d)| = {tape_error:.1e}, "
                     f"max |suite's layer δ − tape δ| = {layer_error:.1e}, "
                     f"all finite: {finite}")
    # C004-4 against an independent value: central differences of σ itself (NumPy, float64). Σ_i σ(u_i) is
    # separable, so its central difference in u_i is σ′(u_i). (The tape's sigmoid gradient is computed as
    # y(1 − y) by TensorFlow: comparing with it would check the formula against itself.)
    z = np.linspace(-logit_scale, logit_scale, 201)
    y = 1 / (1 + np.exp(-z))
    numeric = central_differences(lambda w: float(np.sum(1 / (1 + np.exp(-w)))), z, [(i,) for i in range(z.size)])
    metrics["logistic_derivative_max_abs_diff"] = float(np.abs(numeric - y * (1 - y)).max())
    lines.append(f"logistic derivative (C004-4): max |central difference of σ − y(1 − y)| over u in "
                 f"[−{logit_scale:g}, {logit_scale:g}] = {metrics['logistic_derivative_max_abs_diff']:.1e} "
                 "(h = 1e-6; rounding of the 201-term sum, eps·Σσ/h, limits it to ~1e-8)")
    figure = functools.partial(plot, shown, z, numeric, y * (1 - y))
    return WorkedResult(metrics, "\n".join(lines), {"output_deltas.png": figure},
                        captions={"output_deltas.png": CAPTION})


def plot(shown: dict, z, numeric, formula, path) -> None:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(shown) + 1, figsize=(4 * (len(shown) + 1), 4), dpi=100)
    for each, (pairing, (delta, y_minus_d)) in zip(axes, shown.items(), strict=False):
        each.plot(y_minus_d.ravel(), delta.ravel(), ".", markersize=3, alpha=0.5, label="outputs × samples")
        low, high = float(min(y_minus_d.min(), delta.min())), float(max(y_minus_d.max(), delta.max()))
        each.plot([low, high], [low, high], "k-", linewidth=0.8, label="δ = y − d")
        name, claim = pairing.split(" (")
        each.set(xlabel="y − d", ylabel="δ = ∂E/∂u from the tape", title=f"{name.split(': ')[1]} ({claim}")
        each.legend(fontsize=7)
    last = axes[-1]
    last.plot(z, formula, "-", label="y(1 − y)")
    last.plot(z[::4], numeric[::4], "o", markersize=3, label="central difference of σ")
    last.set(xlabel="u", ylabel="σ′(u)", title="logistic derivative (C004-4)")
    last.legend(fontsize=7)
    artifacts.save_figure(figure, path)


CAPTION = ("What to look for: every point on the diagonal — the tape's δ = ∂E/∂u equals y − d for each output "
           "pairing, also for the logits at ±50 — and the central differences of σ on the curve y(1 − y).")
