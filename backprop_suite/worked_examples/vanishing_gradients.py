"""C003-6: vanishing and exploding gradients in deep MLPs on real digits.

Mechanism: with δ_l = ∂L/∂u_l (the pre-activation gradient of hidden layer l),
δ_l = f′(u_l) ⊙ (δ_(l+1)·W_(l+1)ᵀ), so ‖δ_l‖ <= max f′ · ‖W_(l+1)‖₂ · ‖δ_(l+1)‖ (‖·‖₂ the spectral
norm; max σ′ = 1/4, max tanh′ = max ReLU′ = 1). The measured ratios ‖δ_l‖/‖δ_(l+1)‖ are set against
that bound; large initial weights make ReLU gradients explode instead.
"""
import functools

import keras
import numpy as np
import tensorflow as tf

from backprop_suite import artifacts
from backprop_suite.datasets import held_out_validation, load_dataset, to_model_inputs
from backprop_suite.models import build_model
from backprop_suite.worked_examples.result import WorkedResult

MAX_DERIVATIVE = {"sigmoid": 0.25, "tanh": 1.0, "relu": 1.0}
STANDARD_INIT = {"sigmoid": "glorot_uniform", "tanh": "glorot_uniform", "relu": "he_normal"}


def pre_activation_gradients(model, x, t) -> list[np.ndarray]:
    """δ_l = ∂L/∂u_l for every Dense layer, by running the layers' own ops under the tape."""
    pre_activations, y = [], tf.constant(x)
    with tf.GradientTape() as tape:
        for layer in model.layers:
            u = tf.matmul(y, layer.kernel) + layer.bias
            tape.watch(u)
            pre_activations.append(u)
            y = layer.activation(u)
        loss = tf.reduce_mean(keras.losses.categorical_crossentropy(t, y))
    return [g.numpy() for g in tape.gradient(loss, pre_activations)]


def layer_profile(model, x, t) -> dict:
    deltas = pre_activation_gradients(model, x, t)
    kernels = [layer.kernel.numpy() for layer in model.layers]
    hidden = len(deltas) - 1  # the last Dense is the softmax output
    norms = [float(np.linalg.norm(d)) for d in deltas[:hidden]]
    ratios = [norms[layer] / norms[layer + 1] for layer in range(hidden - 1)]
    spectral = [float(np.linalg.norm(kernels[layer + 1], 2)) for layer in range(hidden - 1)]
    return {"delta_norms": norms, "ratios": ratios, "spectral_norms": spectral}


def profile_for(activation, depth, width, weight_scale, x, t, seed, initializer=None):
    keras.utils.set_random_seed(seed)
    model = build_model("deep_mlp", depth=depth, width=width, activation=activation,
                        initializer=initializer or STANDARD_INIT[activation], weight_scale=weight_scale)
    return model, layer_profile(model, x, t)


def vanishing_gradients(depth: int = 20, depths: list = (2, 5, 10, 20), width: int = 100, batch_size: int = 256,
                        large_weight_scale: float = 2.0, train_steps: int = 300, seed: int = 0) -> WorkedResult:
    dataset = load_dataset("mnist-5k")
    fit, _ = held_out_validation(dataset.train, 0.1)
    x_all, t_all = to_model_inputs(fit, (784,))
    x, t = x_all[:batch_size], t_all[:batch_size]
    metrics, profiles, lines = {}, {}, [f"C003-6: deep MLPs ({width} units per hidden layer) on {batch_size} "
                                        "mnist-5k digits; ‖δ_l‖ = norm of ∂L/∂u_l over the batch"]
    for activation in MAX_DERIVATIVE:
        model, profile = profile_for(activation, depth, width, 1.0, x, t, seed)
        bounds = [MAX_DERIVATIVE[activation] * s for s in profile["spectral_norms"]]
        profile["bound_holds"] = all(r <= b * (1 + 1e-9) for r, b in zip(profile["ratios"], bounds, strict=True))
        profile["bounds"] = bounds
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy")
        steps_per_epoch = -(-len(x_all) // 100)
        model.fit(x_all, t_all, batch_size=100, epochs=-(-train_steps // steps_per_epoch), verbose=0)
        profile["delta_norms_after_training"] = layer_profile(model, x, t)["delta_norms"]
        profiles[activation] = profile
        first_over_last = profile["delta_norms"][0] / profile["delta_norms"][-1]
        metrics[f"{activation}_first_over_last_depth{depth}"] = first_over_last
        metrics[f"{activation}_bound_holds"] = int(profile["bound_holds"])
        metrics[f"{activation}_median_ratio"] = float(np.median(profile["ratios"]))
        metrics[f"{activation}_median_bound"] = float(np.median(bounds))
        lines.append(f"{activation:8} standard init: ‖δ_1‖/‖δ_{depth}‖ = {first_over_last:.2e}; per layer, measured "
                     f"ratio median {np.median(profile['ratios']):.3f} <= bound max f′·‖W‖₂ median "
                     f"{np.median(bounds):.3f} (holds at every layer: {profile['bound_holds']})")
    _, large = profile_for("relu", depth, width, large_weight_scale, x, t, seed)
    profiles["relu_large"] = large
    metrics["relu_large_weights_first_over_last"] = large["delta_norms"][0] / large["delta_norms"][-1]
    lines.append(f"relu, weights ×{large_weight_scale:g}: ‖δ_1‖/‖δ_{depth}‖ = "
                 f"{metrics['relu_large_weights_first_over_last']:.2e} (exploding)")
    sweep = {a: [profile_for(a, d, width, 1.0, x, t, seed)[1]["delta_norms"] for d in depths] for a in MAX_DERIVATIVE}
    sweep = {a: [n[0] / n[-1] for n in norms] for a, norms in sweep.items()}
    lines.append("depth sweep, ‖δ_1‖/‖δ_last‖: " + "; ".join(
        f"{a} " + ", ".join(f"{d}: {r:.1e}" for d, r in zip(depths, ratios, strict=True))
        for a, ratios in sweep.items()))
    lines.append(f"In one sentence: each sigmoid layer multiplies the backpropagated gradient by at most "
                 f"¼·‖W‖₂ (median {metrics['sigmoid_median_bound']:.2f}; "
                 f"measured {metrics['sigmoid_median_ratio']:.2f}), "
                 f"so at depth {depth} the first layer gets {metrics[f'sigmoid_first_over_last_depth{depth}']:.0e} of "
                 f"the last layer's gradient, while ReLU with He init keeps it near 1 and with weights ×"
                 f"{large_weight_scale:g} makes it explode.")
    figure = functools.partial(plot, profiles, sweep, depths, depth)
    return WorkedResult(metrics, "\n".join(lines), {"gradient_norms.png": figure}, data=dataset.provenance(),
                        details={"profiles": profiles, "depth_sweep": sweep},
                        captions={"gradient_norms.png": CAPTION})


def plot(profiles, sweep, depths, depth, path) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    colors = {"sigmoid": "tab:blue", "tanh": "tab:orange", "relu": "tab:green", "relu_large": "tab:red"}
    figure, (norms, ratios, sweeps) = plt.subplots(1, 3, figsize=(15, 4.6), dpi=100)
    for name, profile in profiles.items():
        layers = np.arange(1, len(profile["delta_norms"]) + 1)
        label = name.replace("_large", ", large weights")
        norms.plot(layers, profile["delta_norms"], "-o", color=colors[name], markersize=3, label=f"{label} at init")
        if "delta_norms_after_training" in profile:  # on top of the init line, hollow markers: both stay visible
            norms.plot(layers, profile["delta_norms_after_training"], "--s", color=colors[name], markersize=5,
                       markerfacecolor="none", zorder=3, label=f"{label} after training")
        if "bounds" in profile:
            between = layers[:-1]  # ratio ‖δ_l‖/‖δ_(l+1)‖ belongs to layer l
            ratios.plot(between, profile["ratios"], "o", color=colors[name], markersize=4,
                        label=f"{name}: measured ‖δ_l‖/‖δ_l+1‖")
            ratios.plot(between, profile["bounds"], "-", color=colors[name], alpha=0.8,
                        label=f"{name}: bound max f′·‖W_l+1‖₂")
    norms.set(yscale="log", xlabel="hidden layer l (1 = nearest the input)", ylabel="‖δ_l‖ = ‖∂L/∂u_l‖",
              title=f"Gradient norm per layer, depth {depth}")
    ratios.axhline(1, color="gray", linewidth=0.8)
    ratios.set(yscale="log", xlabel="hidden layer l", ylabel="per-layer factor",
               title="Each layer's factor stays under its bound")
    ratios.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ratios.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ratios.yaxis.set_minor_formatter(NullFormatter())
    for activation, values in sweep.items():
        sweeps.plot(depths, values, "-o", color=colors[activation], label=activation)
    sweeps.set(yscale="log", xlabel="depth (hidden layers)", ylabel="‖δ_1‖ / ‖δ_last‖",
               title="First-layer over last-layer gradient norm, at init")
    for axes in (norms, ratios, sweeps):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3, which="major")
        axes.legend(fontsize=7, **({"loc": "upper center", "bbox_to_anchor": (0.5, -0.14), "ncol": 2}
                                   if axes is ratios else {}))
    artifacts.save_figure(figure, path)


CAPTION = ("What to look for: with sigmoid, ‖δ_l‖ falls by orders of magnitude towards layer 1, because every "
           "layer's factor (dots) lies under its bound max f′·‖W‖₂ = ¼·‖W‖₂ (line), below 1; ReLU with He init "
           "stays level, and ReLU with large weights explodes (C003-6).")
