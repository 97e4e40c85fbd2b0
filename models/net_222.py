"""The 2-2-2 network worked by hand in note 000 (C000-1), with settable weights w1..w8.

Naming (the note's): h1 = w1·x1 + w2·x2 + b1, h2 = w3·x1 + w4·x2 + b2, z = sigmoid(h);
p1 = w5·z1 + w6·z2 + b3, p2 = w7·z1 + w8·z2 + b4, p = identity (or sigmoid) of that.
Keras stores a Dense kernel as (inputs, outputs), so w_k from input i to unit j sits at kernel[i, j].
"""
import keras
import numpy as np
from keras import layers

# name -> (layer, "kernel" or "bias", index in that array)
NET_222_PARAMETERS = {
    "w1": ("hidden", "kernel", (0, 0)), "w2": ("hidden", "kernel", (1, 0)),
    "w3": ("hidden", "kernel", (0, 1)), "w4": ("hidden", "kernel", (1, 1)),
    "w5": ("output", "kernel", (0, 0)), "w6": ("output", "kernel", (1, 0)),
    "w7": ("output", "kernel", (0, 1)), "w8": ("output", "kernel", (1, 1)),
    "b1": ("hidden", "bias", (0,)), "b2": ("hidden", "bias", (1,)),
    "b3": ("output", "bias", (0,)), "b4": ("output", "bias", (1,)),
}
OUTPUT_ACTIVATIONS = ("linear", "sigmoid")


def build_net_222(output_activation: str = "linear", parameters: dict[str, float] | None = None,
                  dtype: str = "float32") -> keras.Sequential:
    """The 2-2-2 network; `parameters` maps w1..w8, b1..b4 to values (unnamed ones are 0)."""
    if output_activation not in OUTPUT_ACTIVATIONS:
        raise ValueError(f"output_activation={output_activation!r} is not one of {', '.join(OUTPUT_ACTIVATIONS)}")
    model = keras.Sequential([
        keras.Input(shape=(2,), name="x", dtype=dtype),
        layers.Dense(2, activation="sigmoid", name="hidden", dtype=dtype),
        layers.Dense(2, activation=output_activation, name="output", dtype=dtype),
    ], name=f"net_222_{output_activation}")
    set_net_222_parameters(model, parameters or {})
    return model


def set_net_222_parameters(model: keras.Sequential, parameters: dict[str, float]) -> None:
    """Set w1..w8 and b1..b4 by the note's names; every parameter not named becomes 0."""
    unknown = sorted(set(parameters) - set(NET_222_PARAMETERS))
    if unknown:
        raise ValueError(f"unknown 2-2-2 parameters {unknown}; known: {', '.join(NET_222_PARAMETERS)}")
    arrays = {name: [np.zeros((2, 2)), np.zeros(2)] for name in ("hidden", "output")}
    for name, value in parameters.items():
        layer, which, index = NET_222_PARAMETERS[name]
        arrays[layer][0 if which == "kernel" else 1][index] = value
    for layer, (kernel, bias) in arrays.items():
        model.get_layer(layer).set_weights([kernel, bias])


def net_222_parameters(model: keras.Sequential) -> dict[str, float]:
    """The current w1..w8, b1..b4 of a 2-2-2 network, by the note's names."""
    return by_note_names({f"{layer.name}/{v.name}": v.numpy() for layer in model.layers for v in layer.weights})


def by_note_names(arrays: dict) -> dict[str, float]:
    """w1..w8, b1..b4 picked out of arrays named "hidden/kernel", "output/bias", ... (weights or gradients)."""
    return {name: float(arrays[f"{layer}/{which}"][index])
            for name, (layer, which, index) in NET_222_PARAMETERS.items()}
