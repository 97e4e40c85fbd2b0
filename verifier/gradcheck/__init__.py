"""gradcheck: are a Keras model's gradients right? Layer by layer, on any Keras 3 backend.

    from gradcheck import assert_gradients, check_gradients

Each checked layer's gradient is compared with finite differences, with forward mode where the backend has it, and
with a hand-derived formula where gradcheck/manual/ has one; a wrong one is named by its layer. These names load on
first use, so that `import gradcheck.errors` does not start Keras.
"""
_API = {"check_gradients": "gradcheck.check", "assert_gradients": "gradcheck.check",
        "random_batch": "gradcheck.check", "GradientReport": "gradcheck.gradient_report",
        "Tolerances": "gradcheck.methods"}
__all__ = sorted(_API)


def __getattr__(name):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'gradcheck' has no attribute {name!r}")
