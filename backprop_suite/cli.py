"""What the entry points in scripts/ share before TensorFlow loads: defaults, argument types, and a quiet
start of TensorFlow. Nothing here imports TensorFlow or Keras at module level, so `--help` answers at once.
"""
import argparse
import os
import sys
import tempfile
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent.parent / "results"
REGISTRY = ("mnist_cnn", "two_layer_net", "deep_mlp", "net_222")  # models/ (a test keeps it equal to the registry)
STRATEGIES = ("default", "mirrored", "multiworker")  # distribute.py
BENCH_CONFIGS = ("fit", "fit_jit", "tape_step", "manual_step", "manual_step_eager", "torch")  # bench.py
PEER_TIMEOUT_S = 120  # how long a multi-worker run waits for the other workers to start (train.py --peer-timeout)
LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not positive; give 1 or more")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a positive, finite number")
    return value


def seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"{value} is outside [0, 2**32)")
    return value


def load_tensorflow_quietly() -> None:
    """Import TensorFlow without its start-up log lines, unless TF_CPP_MIN_LOG_LEVEL says to show them.

    TensorFlow 2.21 writes its start-up lines (oneDNN, CUDA drivers, CPU features) through Abseil's logging
    before that logging is initialised, where TF_CPP_MIN_LOG_LEVEL cannot reach them. So the import (and the
    device scan that logs `cuInit` failures) runs with file descriptor 2 pointed at a temporary file, which is
    replayed if the import fails: an error is never hidden. TF_CPP_MIN_LOG_LEVEL=3 (errors only hidden too)
    covers what TensorFlow logs later; set TF_CPP_MIN_LOG_LEVEL=0 to see everything.
    """
    if "tensorflow" in sys.modules:
        return
    if os.environ.setdefault(LOG_LEVEL_ENV, "3") != "3":
        import tensorflow  # noqa: F401  (the user asked for the log lines)
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode("utf-8", errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
