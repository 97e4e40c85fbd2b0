"""C003-5: the note's scalar chain network, its closed-form chain-rule products against the tape.

u_1 = x (the input layer passes it on: a_1 = u_1), u_(i+1) = w_i·a_i, a_i = f(u_i) for i >= 2, and
E = ½(a_L − d)², so ∂E/∂a_L = a_L − d is "known" as in the note. The note's closed forms:
    ∂E/∂u_L = ∂E/∂a_L · f′(u_L)
    ∂E/∂w_i = ∂E/∂a_L · f′(u_L) · w_(L−1) · f′(u_(L−1)) ⋯ w_(i+1) · f′(u_(i+1)) · a_i
    ∂E/∂u_i = the same product without a_i, times w_i · f′(u_i)  (times w_1 alone for u_1)
each earlier gradient multiplying in one more f′(u)·w. They are evaluated here as explicit products.
"""
import functools
import math

import numpy as np
import tensorflow as tf

from backprop_suite import artifacts
from backprop_suite.worked_examples.result import WorkedResult

ACTIVATIONS = {  # f and f′; ReLU′(0) = 0 as in TensorFlow (C002-4)
    "sigmoid": (lambda u: 1 / (1 + math.exp(-u)), lambda u: (s := 1 / (1 + math.exp(-u))) * (1 - s)),
    "tanh": (math.tanh, lambda u: 1 - math.tanh(u) ** 2),
    "relu": (lambda u: max(u, 0.0), lambda u: 1.0 if u > 0 else 0.0),
}
TF_ACTIVATIONS = {"sigmoid": tf.sigmoid, "tanh": tf.tanh, "relu": tf.nn.relu}


def closed_form(x, d, w, activation):
    """The note's products, factor by factor: (dE/dw, dE/du, u, a, printed lines)."""
    f, df = ACTIVATIONS[activation]
    depth = len(w) + 1
    u, a = [x], [x]  # index 0 is layer 1
    for i in range(depth - 1):
        u.append(w[i] * a[i])
        a.append(f(u[-1]))
    dE_da_last = a[-1] - d

    def tail(i):  # ∂E/∂a_L · f′(u_L) · Π_(k=i+1)^(L−1) w_k f′(u_k), with layers numbered from 1
        product = dE_da_last * df(u[depth - 1])
        for k in range(depth - 1, i, -1):
            product *= w[k - 1] * df(u[k - 1])
        return product

    dE_dw = [tail(i + 1) * a[i] for i in range(depth - 1)]  # w_i joins layer i to i + 1
    dE_du = [tail(1) * w[0]] + [tail(i + 1) * w[i] * df(u[i]) for i in range(1, depth - 1)] + [tail(depth)]
    lines = []
    for i in range(depth - 1, 0, -1):
        factors = " · ".join([f"∂E/∂a{depth} {dE_da_last:+.4g}", f"f′(u{depth}) {df(u[depth - 1]):.4g}"]
                             + [f"w{k} {w[k - 1]:.4g} · f′(u{k}) {df(u[k - 1]):.4g}" for k in range(depth - 1, i, -1)]
                             + [f"a{i} {a[i - 1]:.4g}"])
        lines.append(f"∂E/∂w{i} = {factors} = {dE_dw[i - 1]:+.6e}")
    return dE_dw, dE_du, lines


def tape_gradients(x, d, w, activation):
    weights = [tf.Variable(v, dtype=tf.float64) for v in w]
    with tf.GradientTape(persistent=True) as tape:
        u = [tf.constant(x, tf.float64)]
        tape.watch(u[0])
        a = [u[0]]
        for weight in weights:
            u.append(weight * a[-1])
            a.append(TF_ACTIVATIONS[activation](u[-1]))
        E = 0.5 * (a[-1] - d) ** 2
    dE_dw = [float(g) for g in tape.gradient(E, weights)]
    dE_du = [float(tape.gradient(E, ui)) for ui in u]
    return dE_dw, dE_du


def chain_network(depths: list = (4, 10, 30), x: float = 0.8, target: float = 0.3, seed: int = 0) -> WorkedResult:
    rng = np.random.default_rng(seed)
    metrics, lines = {}, ["C003-5: scalar chain u_(i+1) = w_i·a_i, a_i = f(u_i), E = ½(a_L − d)², "
                          f"x = {x}, d = {target}, weights uniform in [0.5, 1.5]"]
    worst, deepest = 0.0, {}
    for depth in depths:
        w = rng.uniform(0.5, 1.5, depth - 1).tolist()
        for activation in ACTIVATIONS:
            dE_dw, dE_du, factor_lines = closed_form(x, target, w, activation)
            tape_dw, tape_du = tape_gradients(x, target, w, activation)
            closed, tape = np.array(dE_dw + dE_du), np.array(tape_dw + tape_du)
            error = float(np.max(np.abs(closed - tape) / np.maximum(np.abs(tape), 1e-300)))
            worst = max(worst, error)
            metrics[f"max_rel_error_{activation}_depth{depth}"] = error
            metrics[f"first_over_last_weight_gradient_{activation}_depth{depth}"] = abs(dE_dw[0] / dE_dw[-1])
            lines.append(f"\ndepth {depth}, {activation}: closed form vs tape, max relative error {error:.1e}; "
                         f"|∂E/∂w1| / |∂E/∂w{depth - 1}| = {abs(dE_dw[0] / dE_dw[-1]):.2e}")
            if depth == min(depths):
                lines += [f"  {line}" for line in factor_lines]
            if depth == max(depths):
                deepest[activation] = (dE_dw, tape_dw)
    metrics["max_rel_error"] = worst
    lines.append("\nnote: the note's fifth line is labelled ∂E/∂w2, but its product ends in u1: it is ∂E/∂w1.")
    return WorkedResult(metrics, "\n".join(lines),
                        {"chain_gradients.png": functools.partial(plot, deepest, max(depths))},
                        captions={"chain_gradients.png": CAPTION})


CAPTION = ("What to look for: the tape's dots sit on the closed-form products at every weight; each step towards "
           "the input multiplies in one more f′(u)·w, so with the sigmoid (f′ ≤ ¼) the gradient falls (C003-5).")


def plot(deepest: dict, depth: int, path) -> None:
    """|∂E/∂w_i| along the chain, closed form (lines) and tape (dots), one colour per activation."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.5, 4.2), dpi=100)
    for activation, (closed, tape) in deepest.items():
        index = np.arange(1, len(closed) + 1)
        line, = axes.plot(index, np.abs(closed), "-", label=f"{activation}: closed-form product")
        axes.plot(index, np.abs(tape), "o", color=line.get_color(), markersize=3, label=f"{activation}: tape")
    axes.set(yscale="log", xlabel="weight index i (1 = nearest the input)", ylabel="|∂E/∂w_i| (log scale)",
             title=f"Chain network of depth {depth}: each step back multiplies in f′(u)·w")
    axes.legend(fontsize=7)
    artifacts.save_figure(figure, path)
