"""Gradient checks as experiments: a model's backward formulas three ways (C001-2, C002-3, C002-5,
C003-1), and which ReLU mask TensorFlow follows at exactly 0 (C002-4)."""
import functools

import keras
import numpy as np
import tensorflow as tf

from backprop_suite import artifacts
from backprop_suite.check_gradients import gradient_check_report
from backprop_suite.worked_examples.result import WorkedResult
from gradcheck.gradient_report import GRADCHECK_CAPTION, format_table, plot_errors
from gradcheck.manual import layers as manual


def gradient_check(model: str = "two_layer_net", dtype: str = "float64", batch_size: int = 8, fd_entries: int = 32,
                   directions: int = 5, seed: int = 0) -> WorkedResult:
    report = gradient_check_report(model, dtype, batch_size, fd_entries, directions, seed)
    comparisons = report["three_way"]["comparisons"]
    metrics = {"passed": int(report["passed"]), "parameters": report["parameters"],
               "three_way_passed": int(report["three_way"]["passed"]),
               "directional_passed": int(report["directional"]["passed"]),
               "directional_seconds": report["directional"]["seconds"],
               **{f"worst_{methods}_over_tolerance": max(c["worst_over_tolerance"] for c in comparisons
                                                         if c["methods"] == methods)
                  for methods in ("manual_vs_tape", "manual_vs_finite_differences", "tape_vs_finite_differences")}}
    return WorkedResult(metrics, format_table(report), {"gradcheck.png": functools.partial(plot_errors, report)},
                        data=report["batch"]["provenance"], details=report,
                        captions={"gradcheck.png": GRADCHECK_CAPTION})


def relu_gradient_at_zero() -> WorkedResult:
    """The slide masks x < 0, the book x <= 0: they differ only at exactly 0. Which does TensorFlow follow?"""
    x = np.array([-1.0, 0.0, 1.0])
    measured, lines = {}, ["C002-4: dReLU/dx at x = −1, 0, +1"]
    for label, fn in (("tf.nn.relu", tf.nn.relu), ("keras.layers.ReLU", keras.layers.ReLU(dtype="float64")),
                      ("Dense(activation='relu') activation", keras.activations.relu)):
        for dtype in ("float32", "float64"):
            value = tf.Variable(x.astype(dtype))
            with tf.GradientTape() as tape:
                y = tf.reduce_sum(fn(value))
            measured[(label, dtype)] = tape.gradient(y, value).numpy().tolist()
            lines.append(f"  {label:38} {dtype}: {measured[(label, dtype)]}")
    book, slide = (x > 0).astype(float).tolist(), (~(x < 0)).astype(float).tolist()
    layer = manual.ReLU()
    layer.forward(tf.constant(x))
    suite = layer.backward(tf.ones(3, tf.float64)).numpy().tolist()
    lines += [f"  book's mask (x <= 0 zeroed):  {book}", f"  slide's mask (x < 0 zeroed): {slide}",
              f"  this suite's manual ReLU:     {suite}"]
    gradients_at_zero = {v[1] for v in measured.values()}
    follows_book = all(v == book for v in measured.values())
    lines.append("TensorFlow follows the book's convention: the gradient at exactly 0 is 0." if follows_book
                 else "TensorFlow does NOT follow the book's convention here.")
    grid = tf.Variable(np.linspace(-1.0, 1.0, 201))  # includes exactly 0
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(tf.nn.relu(grid))
    along = tape.gradient(y, grid).numpy()
    figure = functools.partial(plot_relu_at_zero, grid.numpy(), along, measured[("tf.nn.relu", "float64")][1],
                               suite[1])
    return WorkedResult({"tensorflow_relu_gradient_at_zero": max(gradients_at_zero),
                         "tensorflow_follows_book_mask": int(follows_book),
                         "manual_relu_gradient_at_zero": suite[1]}, "\n".join(lines),
                        {"relu_gradient_at_zero.png": figure}, captions={"relu_gradient_at_zero.png": RELU_CAPTION})


def plot_relu_at_zero(x, gradient, tape_at_zero, manual_at_zero, path) -> None:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.5, 4), dpi=100)
    axes.plot(x, np.maximum(x, 0), color="lightgray", label="ReLU(x)")
    axes.plot(x[x != 0], gradient[x != 0], ".", markersize=3, color="tab:blue", label="tape gradient, x ≠ 0")
    axes.plot([0], [1], "o", markersize=11, markerfacecolor="none", color="tab:orange",
              label="slide's mask (x < 0 zeroed): 1 at 0")
    axes.plot([0], [0], "s", markersize=11, markerfacecolor="none", color="tab:green",
              label="book's mask (x <= 0 zeroed): 0 at 0")
    axes.plot([0], [tape_at_zero], "o", markersize=6, color="tab:blue", label=f"tape at exactly 0: {tape_at_zero:g}")
    axes.plot([0], [manual_at_zero], "x", markersize=9, color="black", label=f"suite's manual ReLU: {manual_at_zero:g}")
    axes.set(xlabel="x", ylabel="dReLU/dx", title="ReLU's gradient at exactly 0 (C002-4)", ylim=(-0.15, 1.15))
    axes.legend(fontsize=7, loc="upper left")
    artifacts.save_figure(figure, path)


RELU_CAPTION = ("What to look for: at exactly x = 0 the tape's gradient (blue dot) sits on the book's convention "
                "(green square: 0), not the slide's (orange circle: 1); elsewhere both masks agree.")
