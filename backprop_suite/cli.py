"""What the entry points in scripts/ share before TensorFlow loads: defaults, argument types, and a quiet
start of TensorFlow. Nothing here imports TensorFlow or Keras at module level, so `--help` answers at once.
"""
import argparse
import ctypes
import importlib.util
import mmap
import os
import re
import sys
import tempfile
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent.parent / "results"
REGISTRY = ("mnist_cnn", "two_layer_net", "deep_mlp", "net_222")  # models/ (a test keeps it equal to the registry)
STRATEGIES = ("default", "mirrored", "multiworker")  # distribute.py
PRECISIONS = ("float32", "mixed_bfloat16")  # the Keras dtype policies a training spec may name (experiment.py)
BENCH_CONFIGS = ("train_py", "train_py_bf16", "train_py_jax", "train_py_torch", "fit", "fit_jit", "tape_step",
                 "manual_step", "manual_step_eager", "torch")  # bench.py
PEER_TIMEOUT_S = 120  # how long a multi-worker run waits for the other workers to start (train.py --peer-timeout)
LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
BACKENDS = ("tensorflow", "jax", "torch")  # Keras 3's backends the suite runs on (autodiff.py)
DEFAULT_BACKEND = "tensorflow"  # the reference results are made on it


def add_backend_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=BACKENDS,
                        help="Keras backend to run on (default: $KERAS_BACKEND, else tensorflow)")


def select_backend(requested: str | None) -> str:
    """Keras's backend for this process, set before Keras loads: --backend, else $KERAS_BACKEND, else TensorFlow.
    Refused, before any work, when it is unknown or its package is not installed."""
    from gradcheck.errors import InputError

    backend = requested or os.environ.get("KERAS_BACKEND") or DEFAULT_BACKEND
    source = "--backend" if requested else "KERAS_BACKEND"
    if backend not in BACKENDS:
        raise InputError(f"{source}={backend!r}: not a Keras backend this suite runs on; use one of "
                         f"{', '.join(BACKENDS)}")
    if importlib.util.find_spec(backend) is None:
        raise InputError(f"{source}={backend}: the {backend} package is not installed; bash scripts/setup.sh installs "
                         "the pinned one (requirements.txt)")
    if "keras" in sys.modules and sys.modules["keras"].backend.backend() != backend:
        raise InputError(f"{source}={backend}: Keras already runs on {sys.modules['keras'].backend.backend()} in this "
                         "process; set KERAS_BACKEND before Python starts")
    os.environ["KERAS_BACKEND"] = backend
    return backend


def _positive(kind, described: str):
    """An argparse type: `kind` (int or float) of the text, refused unless positive and finite."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {described}") from None
        if not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError(f"{text} is not positive; give a positive, finite number")
        return value

    return parse


positive_int = _positive(int, "a whole number")
positive_float = _positive(float, "a number")


def seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"{value} is outside [0, 2**32)")
    return value


def load_tensorflow_quietly() -> None:
    """Import TensorFlow without its log lines, unless TF_CPP_MIN_LOG_LEVEL asks for them (0 shows all).

    TensorFlow 2.21 logs through Abseil, which TF_CPP_MIN_LOG_LEVEL no longer reaches: its start-up lines
    (oneDNN, CUDA drivers, CPU features) come before logging is initialised, and later ones ("Not handling
    type DT_DOUBLE" in float64 graphs) go straight to stderr. So the import (and the device scan that logs
    `cuInit` failures) runs with file descriptor 2 pointed at a temporary file, replayed if the import fails
    (an error is never hidden), and then Abseil's own minimum level is set to what TF_CPP_MIN_LOG_LEVEL says.
    """
    level = os.environ.setdefault(LOG_LEVEL_ENV, "3")
    if os.environ.get("KERAS_BACKEND", DEFAULT_BACKEND) != "tensorflow" and not importlib.util.find_spec("tensorflow"):
        return  # JAX or PyTorch without TensorFlow (a GPU machine): nothing to quiet
    if level != "3" or "tensorflow" in sys.modules:  # asked for the lines, or too late to hide the start-up ones
        import tensorflow as tf
    else:
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
    _set_abseil_min_log_level(Path(tf.sysconfig.get_lib()) / "libtensorflow_framework.so.2",
                              min(max(int(level) if level.isdigit() else 0, 0), 3))


def _set_abseil_min_log_level(library: Path, severity: int) -> None:
    """absl::SetMinLogLevel(severity) (0 info, 1 warning, 2 error, 3 fatal) in TensorFlow's C++ library. Its
    symbol name carries Abseil's version namespace (lts_YYYYMMDD), so it is found in the library's symbol
    table; where there is none (another platform or build), nothing changes."""
    try:
        with open(library, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as image:
            found = re.search(rb"_ZN4absl12lts_\d+14SetMinLogLevelENS0_18LogSeverityAtLeastE", image)
            symbol = found.group().decode() if found else None
        if symbol:
            getattr(ctypes.CDLL(str(library)), symbol)(ctypes.c_int(severity))
    except (OSError, ValueError, AttributeError):
        pass
