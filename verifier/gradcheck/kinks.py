"""Which layers' kinks a finite-difference step crosses: seen inside the model, where the kinks are.

A central difference (L(w + h·e) − L(w − h·e)) / 2h measures a derivative only if L is smooth on [w − h, w + h].
A ReLU's input that sits nearer its kink at 0 than the step moves it breaks that, and at Keras's initial weights a deep
network in inference mode can collapse its activations onto the kinks: MobileNetV2's late ReLU6 inputs all lie within
3e-10 of 0, so every step from 1e-3 to 1e-9 crosses hundreds of kinks and the differences are steady but are not the
derivative. The gradient check's detector, which sees only L (gradcheck.py), cannot resolve kinks that near. Here the
inputs of every piecewise activation are recorded during a forward at w and at w ± step; an input that moves onto or
across one of its activation's kinks (the manual formula's KINKS) is a kink the step crossed, named by its layer.
"""
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from gradcheck import keras_internals
from gradcheck.manual import layers as formulas

ACTIVATION_KINKS = {name: step.KINKS for name, step in formulas.ACTIVATIONS.items() if getattr(step, "KINKS", ())}


def activation_kinks(function) -> tuple:
    """The kinks of a Keras activation function (found by identity, as the formula table finds it), else ()."""
    name = getattr(function, "__name__", "")
    return ACTIVATION_KINKS[name] if name in ACTIVATION_KINKS and keras.activations.get(name) is function else ()


def _layer_kinks(layer) -> tuple[str, tuple]:
    """Which attribute of the layer computes its piecewise part ("activation", or "call" for an activation layer), and
    where the kinks of that part's input lie."""
    if isinstance(layer, keras.layers.ReLU):
        return "call", (float(layer.threshold),) + (() if layer.max_value is None else (float(layer.max_value),))
    if isinstance(layer, (keras.layers.LeakyReLU, keras.layers.PReLU)):
        return "call", (0.0,)
    if isinstance(layer, keras.layers.ELU) and layer.alpha != 1:  # α = 1: the derivative is continuous at 0
        return "call", (0.0,)
    if isinstance(getattr(type(layer), "activation", None), property):
        return "activation", ()  # a recurrent layer's, read from its cell: the cell, a layer too, is recorded
    return "activation", activation_kinks(getattr(layer, "activation", None))


def _layers_in(model, include_self: bool) -> list:
    """The model's layers, nested ones included (and the model itself, a single layer checked alone, if
    `include_self`); none for a keras.ops operation."""
    return keras_internals.sublayers(model, include_self)


@contextlib.contextmanager
def recording_kinked_inputs(model, include_self: bool = False):
    """Within it, every call of a piecewise activation in the model (a ReLU layer, a Dense's relu, a recurrent cell's
    …) appends its input to the yielded {layer name: [arrays]}; the layers are restored on leaving."""
    recorded: dict[str, list] = {}
    patched = []
    for layer in _layers_in(model, include_self):
        attribute, points = _layer_kinks(layer)
        if not points:
            continue
        original = getattr(layer, attribute)

        def recording(x, *args, _name=layer.name, _original=original, **kwargs):
            recorded.setdefault(_name, []).append(x)
            return _original(x, *args, **kwargs)

        patched.append((layer, attribute, attribute in vars(layer), original))
        object.__setattr__(layer, attribute, recording)  # not Keras's tracking __setattr__: a plain function
    try:
        yield recorded
    finally:
        for layer, attribute, own, original in reversed(patched):
            if own:
                object.__setattr__(layer, attribute, original)
            else:
                object.__delattr__(layer, attribute)


def kink_points(model, include_self: bool = False) -> dict[str, tuple]:
    """{layer name: its kinks} for the model's piecewise activations."""
    found = {}
    for layer in _layers_in(model, include_self):
        points = _layer_kinks(layer)[1]
        if points:
            found[layer.name] = points
    return found


def kinked_inputs(model, forward, include_self: bool = False) -> dict[str, list[np.ndarray]]:
    """The inputs of the model's piecewise activations during `forward()` (a call that runs the model once)."""
    with recording_kinked_inputs(model, include_self) as recorded:
        forward()
    readable = {}
    for name, arrays in recorded.items():
        try:
            readable[name] = [ops.convert_to_numpy(x) for x in arrays]
        except Exception:  # noqa: BLE001  recorded inside a compiled loop (JAX's scan: a tracer): not probed
            continue
    return readable


def crossed(points: dict[str, tuple], at: dict, stepped: list[dict]) -> dict[str, int]:
    """{layer: how many of its inputs moved onto or across one of its kinks} between the forward at the point (`at`)
    and each forward at a step from it (`stepped`); layers whose inputs crossed none are left out."""
    found = {}
    for name, before in at.items():
        count = 0
        for after in stepped:
            for z0, z1 in zip(before, after.get(name, []), strict=False):
                if np.shape(z0) != np.shape(z1):
                    continue
                moved = z1 != z0
                count += int(sum(np.sum(moved & ((z1 - k) * (z0 - k) <= 0)) for k in points[name]))
        if count:
            found[name] = count
    return found


def nearest(points: dict[str, tuple], at: dict, names) -> dict[str, float]:
    """{layer: the smallest distance of its inputs at the point from one of its kinks}."""
    return {name: float(min(np.min(np.abs(z - k), initial=np.inf) for z in at[name] for k in points[name]))
            for name in names if name in at}


@dataclass
class KinkProbe:
    """What finite differences need to see kinks inside the model: the kinks of its piecewise activations, their
    inputs at the point, and `inputs_at(w)`, their inputs in a forward at w (GradientProblem.kink_probe)."""
    points: dict[str, tuple]
    at_point: dict[str, list]
    inputs_at: Callable

    def crossed(self, stepped: list) -> dict[str, int]:
        """{layer: inputs moved onto or across a kink} between the point and each of the `stepped` points w."""
        return crossed(self.points, self.at_point, [self.inputs_at(w) for w in stepped])
