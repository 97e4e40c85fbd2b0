"""Backpropagation, checked: the notes' experiments, and a gradient verifier for any Keras model.

    from backprop_suite import assert_gradients, check_gradients

are loaded on first use, so that importing a light submodule (errors, experiment specs) does not start Keras.
"""
_API = {"check_gradients": "backprop_suite.check", "assert_gradients": "backprop_suite.check",
        "random_batch": "backprop_suite.check", "GradientReport": "backprop_suite.gradient_report"}
__all__ = sorted(_API)


def __getattr__(name):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'backprop_suite' has no attribute {name!r}")
