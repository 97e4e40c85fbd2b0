"""C003-3: L1 regularisation makes weights sparse, unlike L2, when many features are irrelevant.

Softmax regression on mnist-5k pixels (the border pixels are always 0: irrelevant features),
trained by SGD with L1 and with L2 of equal strength λ, at several strengths: the fraction of
weights with |w| below a small threshold, and test accuracy. Keras's regularisers are λ·Σ|w| and
λ·Σw²; their gradients λ·sign(w) and 2λw are checked against the tape.
"""
import functools

import keras
import numpy as np
import tensorflow as tf

from backprop_suite import artifacts
from backprop_suite.datasets import held_out_validation, load_dataset, to_model_inputs
from backprop_suite.worked_examples.result import WorkedResult
from gradcheck.manual.regularizers import manual_penalty

REGULARIZERS = {"l1": keras.regularizers.L1, "l2": keras.regularizers.L2}


def regularizer_gradient_error(kind: str, strength: float, rng) -> float:
    """max |λ·sign(w) or 2λw, the manual formula (manual/regularizers.py), − the tape's gradient of Keras's penalty|."""
    regularizer = REGULARIZERS[kind](strength)
    w = tf.Variable(rng.standard_normal((784, 10)))  # no exact zeros, where |w| has no derivative
    with tf.GradientTape() as tape:
        penalty = regularizer(w)
    tape_grad = tape.gradient(penalty, w).numpy()
    manual = manual_penalty(regularizer)
    manual.forward(tf.constant(w.numpy()))
    return float(np.max(np.abs(manual.backward().numpy() - tape_grad)))


def train(kind, strength, data, epochs, learning_rate, seed):
    (x, t), (x_test, t_test) = data
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(
        10, activation="softmax", kernel_regularizer=REGULARIZERS[kind](strength), name="softmax_regression")])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, t, batch_size=100, epochs=epochs, verbose=0)
    return model.get_layer("softmax_regression").kernel.numpy(), float(model.evaluate(x_test, t_test, verbose=0)[1])


def l1_vs_l2(strengths: list = (1e-4, 1e-3, 3e-3), epochs: int = 30, learning_rate: float = 0.1,
             threshold: float = 1e-3, seed: int = 0) -> WorkedResult:
    rng = np.random.default_rng(seed)
    dataset = load_dataset("mnist-5k")
    fit, _ = held_out_validation(dataset.train, 0.1)
    data = (to_model_inputs(fit, (784,)), to_model_inputs(dataset.test, (784,)))
    metrics = {f"{k}_gradient_max_abs_error": regularizer_gradient_error(k, 1e-3, rng) for k in REGULARIZERS}
    runs, lines = {}, [f"C003-3: softmax regression on mnist-5k, SGD η = {learning_rate}, {epochs} epochs; "
                       f"near zero: |w| < {threshold:g}",
                       f"regulariser gradients by hand vs tape: L1 λ·sign(w) max |Δ| = "
                       f"{metrics['l1_gradient_max_abs_error']:.1e}, L2 2λw max |Δ| = "
                       f"{metrics['l2_gradient_max_abs_error']:.1e}", "",
                       f"{'λ':>8} {'L1 near-zero':>13} {'L2 near-zero':>13} {'L1 acc':>8} {'L2 acc':>8}"]
    for strength in strengths:
        for kind in REGULARIZERS:
            runs[(kind, strength)] = train(kind, strength, data, epochs, learning_rate, seed)
        (w1, acc1), (w2, acc2) = runs[("l1", strength)], runs[("l2", strength)]
        near1, near2 = float(np.mean(np.abs(w1) < threshold)), float(np.mean(np.abs(w2) < threshold))
        key = f"{strength:g}"
        metrics.update({f"l1_near_zero_{key}": near1, f"l2_near_zero_{key}": near2,
                        f"l1_accuracy_{key}": acc1, f"l2_accuracy_{key}": acc2,
                        f"near_zero_ratio_{key}": near1 / max(near2, 1 / w1.size),
                        f"accuracy_gap_{key}": abs(acc1 - acc2)})
        lines.append(f"{strength:>8g} {near1:>13.3f} {near2:>13.3f} {acc1:>8.4f} {acc2:>8.4f}")
    shown = strengths[len(strengths) // 2]
    lines.append(f"\nweights drawn for λ = {shown:g} in l1_vs_l2.png (rows: L1, L2; one 28×28 image per class)")
    figure = functools.partial(plot, runs[("l1", shown)][0], runs[("l2", shown)][0], shown)
    return WorkedResult(metrics, "\n".join(lines), {"l1_vs_l2.png": figure}, data=dataset.provenance(),
                        captions={"l1_vs_l2.png": CAPTION})


CAPTION = ("What to look for: with L1 most weights are exactly 0 (white) and each digit's template shrinks to a "
           "few pixels; with L2 the weights are small but hardly any is 0: L1 makes them sparse (C003-3).")


def plot(w_l1, w_l2, strength, path) -> None:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 10, figsize=(14, 3.4), dpi=100)
    limit = max(np.abs(w_l1).max(), np.abs(w_l2).max())
    for row, (name, w) in enumerate((("L1", w_l1), ("L2", w_l2))):
        for digit in range(10):
            ax = axes[row, digit]
            image = ax.imshow(w[:, digit].reshape(28, 28), cmap="RdBu", vmin=-limit, vmax=limit)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(str(digit))
        axes[row, 0].set_ylabel(name, rotation=0, labelpad=15)
    figure.suptitle(f"Softmax-regression weights per class, λ = {strength:g} (white = 0)")
    figure.colorbar(image, ax=axes, fraction=0.02)
    artifacts.save_figure(figure, path, tight=False)
