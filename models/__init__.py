"""Keras definitions of the notes' models, and the registry that scripts and tests build them from.

This folder is the package `backprop_suite.models`: pyproject.toml's [tool.setuptools.package-dir] maps it there
(a distribution must not claim the generic top-level name `models`), so the suite imports
`from backprop_suite.models import build_model` and these modules import one another the same way.
"""
import inspect

from backprop_suite.models.mlp import build_deep_mlp, build_two_layer_net
from backprop_suite.models.mnist_cnn import build_mnist_cnn
from backprop_suite.models.net_222 import build_net_222

MODEL_BUILDERS = {
    "mnist_cnn": build_mnist_cnn,  # C003-1
    "two_layer_net": build_two_layer_net,  # C001-2, C002-1
    "deep_mlp": build_deep_mlp,  # C003-6
    "net_222": build_net_222,  # C000-1
}


def model_options(name: str) -> dict[str, object]:
    """The options a model's builder takes, with their defaults."""
    return {p.name: p.default for p in inspect.signature(MODEL_BUILDERS[name]).parameters.values()}


def build_model(name: str, **options):
    """Build a registered model; ValueError names an unknown model or option."""
    if name not in MODEL_BUILDERS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODEL_BUILDERS)}")
    unknown = sorted(set(options) - set(model_options(name)))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for model {name!r}; it takes: {', '.join(model_options(name))}")
    return MODEL_BUILDERS[name](**options)
