"""Multilayer perceptrons: the book's TwoLayerNet (C001-2, C002-1) and deep MLPs (C003-6)."""
import keras
from keras import layers

ACTIVATIONS = ("sigmoid", "relu", "tanh")
# Keras's variance-scaling initialisers as (scale, mode, distribution); `weight_scale` multiplies
# the resulting standard deviation, so scale is multiplied by weight_scale².
INITIALIZERS = {
    "glorot_uniform": (1.0, "fan_avg", "uniform"),
    "he_normal": (2.0, "fan_in", "truncated_normal"),
    "lecun_normal": (1.0, "fan_in", "truncated_normal"),
}


def build_two_layer_net(input_size: int = 784, hidden_size: int = 50, output_size: int = 10,
                        activation: str = "sigmoid", weight_init_std: float | None = None) -> keras.Sequential:
    """Affine-activation-Affine-softmax, 795n + 10 parameters for 784-n-10 (C002-1).

    weight_init_std: the book's init, W ~ N(0, std²) and b = 0 (it uses 0.01); None keeps
    Keras's Glorot-uniform default.
    """
    _check_choice("activation", activation, ACTIVATIONS)

    def init():  # one initialiser per layer: an unseeded Keras initialiser shared by two layers draws the same numbers
        return "glorot_uniform" if weight_init_std is None else keras.initializers.RandomNormal(stddev=weight_init_std)

    return keras.Sequential([
        keras.Input(shape=(input_size,), name="x"),
        layers.Dense(hidden_size, activation=activation, kernel_initializer=init(), name="affine1"),
        layers.Dense(output_size, activation="softmax", kernel_initializer=init(), name="affine2"),
    ], name="two_layer_net")


def build_deep_mlp(depth: int = 5, width: int = 100, activation: str = "sigmoid",
                   initializer: str = "glorot_uniform", weight_scale: float = 1.0,
                   input_size: int = 784, output_size: int = 10) -> keras.Sequential:
    """`depth` hidden Dense layers of `width` units, then a softmax output layer."""
    _check_choice("activation", activation, ACTIVATIONS)
    _check_choice("initializer", initializer, tuple(INITIALIZERS))
    if depth < 1 or width < 1 or weight_scale <= 0:
        raise ValueError(f"depth and width must be >= 1 and weight_scale > 0 "
                         f"(got depth={depth}, width={width}, weight_scale={weight_scale})")
    scale, mode, distribution = INITIALIZERS[initializer]

    def kernel_init():
        return keras.initializers.VarianceScaling(scale * weight_scale**2, mode, distribution)

    hidden = [layers.Dense(width, activation=activation, kernel_initializer=kernel_init(), name=f"hidden{i + 1}")
              for i in range(depth)]
    return keras.Sequential([
        keras.Input(shape=(input_size,), name="x"),
        *hidden,
        layers.Dense(output_size, activation="softmax", kernel_initializer=kernel_init(), name="output"),
    ], name=f"deep_mlp_{activation}_{depth}x{width}")


def _check_choice(argument: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{argument}={value!r} is not one of {', '.join(choices)}")
