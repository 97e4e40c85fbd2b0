"""C000-1: the 2-2-2 network by hand — every chain-rule factor, dE/dw1..dw8, one SGD step — vs the tape.

The note's own numbers were images and are lost. The defaults are the inputs, weights and targets
of the widely published variant of this example with a sigmoid output (M. Mazur, "A Step by Step
Backpropagation Example", 2015), whose printed results give an independent check.
"""
import math

import keras
import numpy as np
import tensorflow as tf

from backprop_suite.models.net_222 import NET_222_PARAMETERS, build_net_222, by_note_names, net_222_parameters
from backprop_suite.worked_examples.result import WorkedResult
from gradcheck.manual.twin import ManualTwin
from gradcheck.methods import tape_gradients
from gradcheck.parameters import parameters as model_variables

DEFAULT_PARAMETERS = {"w1": 0.15, "w2": 0.20, "w3": 0.25, "w4": 0.30, "w5": 0.40, "w6": 0.45, "w7": 0.50,
                      "w8": 0.55, "b1": 0.35, "b2": 0.35, "b3": 0.60, "b4": 0.60}
WEIGHTS = [f"w{i}" for i in range(1, 9)]


def sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def hand_backprop(x, d, w, output_activation):
    """The note's scalar formulas, one float at a time: returns (E, gradients, printed factors)."""
    h = [w["w1"] * x[0] + w["w2"] * x[1] + w["b1"], w["w3"] * x[0] + w["w4"] * x[1] + w["b2"]]
    z = [sigmoid(v) for v in h]
    o = [w["w5"] * z[0] + w["w6"] * z[1] + w["b3"], w["w7"] * z[0] + w["w8"] * z[1] + w["b4"]]
    p = o if output_activation == "linear" else [sigmoid(v) for v in o]
    E = 0.5 * sum((pk - dk) ** 2 for pk, dk in zip(p, d, strict=True))
    dE_dp = [pk - dk for pk, dk in zip(p, d, strict=True)]  # ∂E/∂p_k = p_k − d_k
    dp_do = [1.0, 1.0] if output_activation == "linear" else [pk * (1 - pk) for pk in p]  # identity or σ′
    delta = [a * b for a, b in zip(dE_dp, dp_do, strict=True)]  # δ_k = ∂E/∂o_k
    # Output weights: ∂E/∂w = δ_k · z_j, with w5: z1→p1, w6: z2→p1, w7: z1→p2, w8: z2→p2.
    grads = {"w5": delta[0] * z[0], "w6": delta[0] * z[1], "w7": delta[1] * z[0], "w8": delta[1] * z[1],
             "b3": delta[0], "b4": delta[1]}
    # Hidden: the output deltas are reused: ∂E/∂z_j = Σ_k δ_k · w_kj (w_k1 = w5, w7; w_k2 = w6, w8).
    dE_dz = [delta[0] * w["w5"] + delta[1] * w["w7"], delta[0] * w["w6"] + delta[1] * w["w8"]]
    dz_dh = [zj * (1 - zj) for zj in z]
    grads.update({"w1": dE_dz[0] * dz_dh[0] * x[0], "w2": dE_dz[0] * dz_dh[0] * x[1],
                  "w3": dE_dz[1] * dz_dh[1] * x[0], "w4": dE_dz[1] * dz_dh[1] * x[1],
                  "b1": dE_dz[0] * dz_dh[0], "b2": dE_dz[1] * dz_dh[1]})
    out = "p" if output_activation == "linear" else "σ(o)"
    lines = [f"forward: h = ({h[0]:.9f}, {h[1]:.9f}), z = σ(h) = ({z[0]:.9f}, {z[1]:.9f}), "
             f"o = ({o[0]:.9f}, {o[1]:.9f}), p = {out} = ({p[0]:.9f}, {p[1]:.9f}), E = ½Σ(p − d)² = {E:.9f}", ""]
    for k, (wa, wb) in enumerate((("w5", "w6"), ("w7", "w8"))):
        for j, name in enumerate((wa, wb)):
            lines.append(f"∂E/∂{name} = ∂E/∂p{k + 1} {dE_dp[k]:+.9f} × ∂p{k + 1}/∂o{k + 1} {dp_do[k]:.9f} "
                         f"× ∂o{k + 1}/∂{name} = z{j + 1} {z[j]:.9f} = {grads[name]:+.9f}")
    for j, (wa, wb) in enumerate((("w1", "w2"), ("w3", "w4"))):
        for i, name in enumerate((wa, wb)):
            lines.append(f"∂E/∂{name} = [δ1·{'w5' if j == 0 else 'w6'} + δ2·{'w7' if j == 0 else 'w8'}] "
                         f"{dE_dz[j]:+.9f} × z{j + 1}(1 − z{j + 1}) {dz_dh[j]:.9f} × x{i + 1} {x[i]:.2f} "
                         f"= {grads[name]:+.9f}")
    return E, grads, lines


def net_222_chain_rule(output_activation: str = "linear", learning_rate: float = 0.5,
                       inputs: list = (0.05, 0.10), targets: list = (0.01, 0.99),
                       parameters: dict | None = None) -> WorkedResult:
    w = {**DEFAULT_PARAMETERS, **(parameters or {})}
    x, d = [float(v) for v in inputs], [float(v) for v in targets]
    if len(x) != 2 or len(d) != 2:
        raise ValueError(f"inputs and targets must have 2 values each (got {inputs}, {targets})")
    E, hand, lines = hand_backprop(x, d, w, output_activation)

    model = build_net_222(output_activation, w, dtype="float64")
    batch, target = np.array([x]), np.array([d])
    tape_loss, tape = tape_gradients(model, batch, target, loss="half_squared_error")
    _, twin = ManualTwin(model, "half_squared_error").loss_and_gradients(batch, target)

    tape_named, twin_named = by_note_names(tape), by_note_names(twin)
    updated_by_hand = {n: w[n] - learning_rate * hand[n] for n in NET_222_PARAMETERS}  # w ← w − η·∂E/∂w
    optimizer = keras.optimizers.SGD(learning_rate)
    optimizer.apply_gradients([(tf.constant(tape[name]), v) for name, v in model_variables(model).items()])
    updated_by_keras = net_222_parameters(model)

    lines += ["", f"{'':4} {'by hand':>13} {'tape':>13} {'manual twin':>13} {'w after SGD':>13}"]
    lines += [f"{n:4} {hand[n]:+13.9f} {tape_named[n]:+13.9f} {twin_named[n]:+13.9f} {updated_by_hand[n]:13.9f}"
              for n in NET_222_PARAMETERS]
    metrics = {"loss": E, "tape_loss": tape_loss,
               **{f"dE_d{n}": hand[n] for n in WEIGHTS}, **{f"{n}_after": updated_by_hand[n] for n in WEIGHTS},
               "max_abs_diff_hand_vs_tape": max(abs(hand[n] - tape_named[n]) for n in NET_222_PARAMETERS),
               "max_abs_diff_hand_vs_manual_twin": max(abs(hand[n] - twin_named[n]) for n in NET_222_PARAMETERS),
               "max_abs_diff_update_hand_vs_keras_sgd": max(abs(updated_by_hand[n] - updated_by_keras[n])
                                                             for n in NET_222_PARAMETERS)}
    lines.append(f"\nhand vs tape: max |Δ| = {metrics['max_abs_diff_hand_vs_tape']:.1e}; updated weights, "
                 f"hand vs keras.optimizers.SGD: max |Δ| = {metrics['max_abs_diff_update_hand_vs_keras_sgd']:.1e}")
    return WorkedResult(metrics, f"C000-1, 2-2-2 network, {output_activation} output, x = {x}, d = {d}, "
                                 f"η = {learning_rate}\n" + "\n".join(lines))
