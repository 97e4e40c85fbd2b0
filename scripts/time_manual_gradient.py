"""Time the manual-backprop gradient of the C003-1 CNN against the tape: float32, fixed dropout masks, loss
and every gradient, median ms of 20 calls; JSON on stdout. It uses only APIs that also existed before the
manual path was made fast (22b4c54), so it measures both revisions:

    git worktree add /tmp/before 22b4c54
    (cd /tmp/before && PYTHONPATH=/tmp/before python /path/to/repo/scripts/time_manual_gradient.py)   # before
    python scripts/time_manual_gradient.py                                                            # after
"""
import json
import time

try:  # revisions before cli.py printed TensorFlow's start-up lines
    from backprop_suite.cli import load_tensorflow_quietly

    load_tensorflow_quietly()
except ImportError:
    pass
import keras
import numpy as np
import tensorflow as tf

from backprop_suite.models import build_model
from gradcheck.manual.twin import ManualTwin

try:
    from gradcheck.parameters import parameters
    from gradcheck.reference import reference_loss
    TWIN_ARGS = ()
except ImportError:  # revisions before the Keras reference moved out of the twin's module (and the twin took a dtype)
    from gradcheck.manual.twin import parameters, reference_loss
    TWIN_ARGS = ("float32",)


def median_ms(fn, calls: int = 20) -> float:
    fn()  # tracing and first allocations are not the steady state
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def timings(model, batch: int, rng) -> dict:
    x = tf.constant(rng.random((batch, 28, 28, 1)), tf.float32)
    t = tf.constant(np.eye(10)[rng.integers(0, 10, batch)], tf.float32)
    masks = {"dropout1": tf.constant(rng.random((batch, 12, 12, 32)) > 0.25),
             "dropout2": tf.constant(rng.random((batch, 128)) > 0.5)}
    variables = list(parameters(model).values())

    @tf.function
    def tape():
        with tf.GradientTape() as recorder:
            loss = reference_loss(model, x, t, masks)
        return recorder.gradient(loss, variables)

    twin = ManualTwin(model, *TWIN_ARGS)
    row = {"tape_ms": median_ms(lambda: [g.numpy() for g in tape()]),
           "manual_eager_ms": median_ms(lambda: twin.loss_and_gradients(x, t, masks))}
    if hasattr(twin, "loss_and_gradient_tensors"):  # the compiled path exists after the change only
        compiled = tf.function(lambda: twin.loss_and_gradient_tensors(x, t, masks)[1])
        row["manual_compiled_ms"] = median_ms(lambda: [g.numpy() for g in compiled()])
    return row


def main() -> int:
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    model = build_model("mnist_cnn")
    print(json.dumps({batch: timings(model, batch, rng) for batch in (32, 128)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
