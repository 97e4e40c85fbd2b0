"""C002-1, C002-2, C001-1, C000-2: what a gradient costs, numerically and by backprop.

A numerical gradient of 784-50-10 (39,760 parameters) calls the forward pass twice per parameter
(79,520 calls, counted here). Backprop costs a small constant times one forward pass, whatever the
number of weights: the ratio is measured for networks from 12 to 600,810 parameters. All timings
in float64 with tf.function on the same batch, medians of `repeats` runs after a warm-up call.
"""
import functools
import time

import numpy as np
import tensorflow as tf

from backprop_suite import artifacts
from backprop_suite.datasets import load_dataset, to_model_inputs
from backprop_suite.models import build_model
from backprop_suite.worked_examples.result import WorkedResult
from gradcheck.dtypes import with_dtype
from gradcheck.manual.twin import ManualTwin
from gradcheck.methods import central_differences
from gradcheck.parameters import parameters
from gradcheck.reference import reference_loss

COST_MODELS = ("net_222", "two_layer_net", "mnist_cnn")  # 12, 39,760 and 600,810 parameters


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: tracing and first-call allocation are not the steady-state cost
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def compiled_forward_and_backprop(model, x, t):
    """tf.functions for the loss and for loss + every gradient (tape), on the model's variables."""
    variables = list(parameters(model).values())
    forward = tf.function(lambda: reference_loss(model, x, t))

    @tf.function
    def backprop():
        with tf.GradientTape() as tape:
            loss = reference_loss(model, x, t)
        return loss, tape.gradient(loss, variables)

    return forward, backprop


def batch_for(model, digits, batch_size, rng):
    """The first `batch_size` digits for an image model; random inputs and targets for the 2-2-2 network."""
    if model.input_shape[1:] in ((28, 28, 1), (784,)):
        x, t = to_model_inputs(digits, model.input_shape[1:])
        return x[:batch_size].astype(np.float64), t[:batch_size].astype(np.float64)
    return rng.standard_normal((batch_size, 2)), rng.random((batch_size, 2))


def gradient_cost(hidden_size: int = 50, batch_size: int = 100, repeats: int = 20, seed: int = 0) -> WorkedResult:
    rng = np.random.default_rng(seed)
    dataset = load_dataset("mnist-5k")
    model = with_dtype(build_model("two_layer_net", hidden_size=hidden_size, weight_init_std=0.01), "float64")
    x, t = batch_for(model, dataset.train, batch_size, rng)
    forward, backprop = compiled_forward_and_backprop(model, x, t)
    twin = ManualTwin(model)

    calls = 0

    def counted_forward():
        nonlocal calls
        calls += 1
        return forward()

    start = time.perf_counter()
    numerical = {}
    for name, variable in parameters(model).items():  # every entry of every tensor, as the book does
        indices = list(np.ndindex(*variable.shape))
        original = variable.numpy()
        numerical[name] = central_differences(lambda w, variable=variable: (variable.assign(w), counted_forward())[1],
                                              original, indices, step=1e-4)  # the book's h
        variable.assign(original)
    numerical_seconds = time.perf_counter() - start
    _, tape_grads = backprop()
    max_diff = max(float(np.abs(numerical[name] - grad.numpy().ravel()).max())
                   for name, grad in zip(numerical, tape_grads, strict=True))

    times = {"forward": median_seconds(forward, repeats), "backprop_tape": median_seconds(backprop, repeats),
             "backprop_manual_eager": median_seconds(lambda: twin.loss_and_gradients(x, t), repeats),
             "numerical": numerical_seconds}
    ratios = {}
    for name in COST_MODELS:
        other = with_dtype(build_model(name), "float64")
        forward_other, backprop_other = compiled_forward_and_backprop(other, *batch_for(other, dataset.train,
                                                                                         batch_size, rng))
        ratios[name] = {"parameters": other.count_params(),
                        "forward": median_seconds(forward_other, repeats),
                        "backprop": median_seconds(backprop_other, repeats)}
        ratios[name]["backprop_over_forward"] = ratios[name]["backprop"] / ratios[name]["forward"]
    metrics = {"parameters": model.count_params(), "forward_calls": calls,
               "numerical_vs_backprop_max_abs_diff": max_diff,
               **{f"{k}_seconds": v for k, v in times.items()},
               "numerical_over_backprop": times["numerical"] / times["backprop_tape"],
               "backprop_over_forward": times["backprop_tape"] / times["forward"],
               **{f"backprop_over_forward_{n}": r["backprop_over_forward"] for n, r in ratios.items()},
               "max_backprop_over_forward": max(r["backprop_over_forward"] for r in ratios.values())}
    lines = [f"TwoLayerNet 784-{hidden_size}-10: {metrics['parameters']:,} parameters (795n + 10 = "
             f"{795 * hidden_size + 10:,}); batch of {batch_size} mnist-5k digits, float64",
             f"numerical gradient: {calls:,} forward calls (2 per parameter) in {times['numerical']:.1f} s; "
             f"max |numerical − backprop| = {max_diff:.1e}",
             f"one forward pass {times['forward'] * 1e3:.3f} ms, "
             f"backprop (tape) {times['backprop_tape'] * 1e3:.3f} ms, "
             f"manual backprop (eager) {times['backprop_manual_eager'] * 1e3:.3f} ms",
             f"numerical / backprop = {metrics['numerical_over_backprop']:,.0f}×;  "
             f"backprop / forward = {metrics['backprop_over_forward']:.2f}×", "",
             "backprop / forward across models (C000-2):"]
    lines += [f"  {n:14} {r['parameters']:>8,} parameters: forward {r['forward'] * 1e3:8.3f} ms, backprop "
              f"{r['backprop'] * 1e3:8.3f} ms, ratio {r['backprop_over_forward']:.2f}" for n, r in ratios.items()]
    return WorkedResult(metrics, "\n".join(lines), {"gradient_cost.png": functools.partial(plot_cost, times, ratios)},
                        data=dataset.provenance(), details={"times_s": times, "models": ratios},
                        captions={"gradient_cost.png": CAPTION})


def plot_cost(times: dict, ratios: dict, path) -> None:
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.3), dpi=100)
    names = ["forward", "backprop_tape", "numerical"]
    bars = left.bar(names, [times[n] for n in names], color=["tab:blue", "tab:green", "tab:red"])
    left.bar_label(bars, labels=[f"{times[n] * 1e3:.3g} ms" if times[n] < 1 else f"{times[n]:.3g} s" for n in names])
    left.set(yscale="log", ylabel="seconds (log scale)", title="TwoLayerNet: one gradient, three ways")
    counts = np.array([r["parameters"] for r in ratios.values()])
    backprop = [r["backprop_over_forward"] for r in ratios.values()]
    span = np.geomspace(counts.min() / 2, counts.max() * 2)
    right.plot(span, 2 * span, "--", color="tab:red", label="numerical: 2 forward passes per parameter")
    numerical = times["numerical"] / times["forward"]
    right.plot([ratios["two_layer_net"]["parameters"]], [numerical], "o", color="tab:red", markersize=8,
               label="numerical, measured (TwoLayerNet)")
    right.annotate(f"{numerical:,.0f}×", (ratios["two_layer_net"]["parameters"], numerical),
                   textcoords="offset points", xytext=(8, -12))
    right.plot(counts, backprop, "o-", color="tab:green", markersize=8, label="backprop (tape), measured")
    for (name, r), offset in zip(ratios.items(), [(6, 8), (6, -15), (-75, 10)], strict=False):
        right.annotate(f"{name}: {r['backprop_over_forward']:.2f}×", (r["parameters"], r["backprop_over_forward"]),
                       textcoords="offset points", xytext=offset, fontsize=8)
    right.set(xscale="log", yscale="log", xlabel="parameters (log scale)",
              ylabel="cost of one gradient, in forward passes",
              title="Backprop: a few forward passes at any size")
    right.grid(alpha=0.3)
    right.legend(fontsize=8, loc="upper left")
    artifacts.save_figure(figure, path)


CAPTION = ("What to look for: as the parameter count grows by orders of magnitude, the numerical gradient's cost "
           "grows with it (2 forward passes per parameter, C002-2) while backprop's stays within a few forward "
           "passes (the green labels, C000-2, C001-1).")
