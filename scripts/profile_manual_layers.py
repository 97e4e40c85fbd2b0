"""Which manual formula makes the manual-backprop step slower than the tape on this CPU?

For each layer of the C003-1 CNN, as the step trains it (float32, the layer's own input shape at the batch
size): the compiled manual forward + backward (verifier/gradcheck/manual/) against the compiled tape of the Keras
layer's forward and its gradient with respect to its input and weights, for the same upstream gradient. Median
of 30 calls after a warm-up, the two timed in alternation; JSON on stdout (and --out), a table on stderr.

    .venv/bin/python scripts/profile_manual_layers.py --batch-sizes 32 128 --out results/manual_layer_profile.json
"""
import argparse
import sys
import time
from pathlib import Path

from backprop_suite import cli
from backprop_suite.artifacts import print_json, require_writable_folder
from backprop_suite.errors import exit_cleanly_on_input_error


def compiled_pair(layer, steps, x, dout, mask):
    """The manual forward + backward and the tape's, each a tf.function of no arguments (the weights are read live)."""
    import keras
    import tensorflow as tf

    weights = {v.name: v for v in layer.weights}

    @tf.function
    def by_hand():
        y = x
        for step in steps:
            if type(step).__name__ == "Dropout":
                y = step.forward(y, mask)
            elif getattr(step, "weights", ()):
                y = step.forward(y, **{w: weights[w].value for w in step.weights if w in weights})
            else:
                y = step.forward(y)
        grad = dout
        for step in reversed(steps):
            grad = step.backward(grad)
        return [grad, *(g for step in steps for g in getattr(step, "grads", {}).values())]

    @tf.function
    def by_tape():
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = x * tf.cast(mask, x.dtype) / (1 - layer.rate) if isinstance(layer, keras.layers.Dropout) else \
                layer(x, training=True)
            value = tf.reduce_sum(y * dout)
        return tape.gradient(value, [x, *layer.trainable_weights])

    return by_hand, by_tape


@exit_cleanly_on_input_error
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=cli.positive_int, nargs="+", default=[32, 128])
    parser.add_argument("--calls", type=cli.positive_int, default=30)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.out is not None:
        require_writable_folder(args.out.parent, "--out")
    cli.load_tensorflow_quietly()
    import keras
    import numpy as np
    import tensorflow as tf

    from backprop_suite.models import build_model
    from backprop_suite.provenance import environment
    from gradcheck.manual.table import manual_steps

    keras.utils.set_random_seed(0)
    model = build_model("mnist_cnn")
    rng = np.random.default_rng(0)
    result = {"command": " ".join(["scripts/profile_manual_layers.py", *(argv or sys.argv[1:])]),
              "environment": environment(), "layers": {}}
    for batch in args.batch_sizes:
        rows = {}
        for layer in model.layers:
            steps = manual_steps(layer, training=True)
            if not steps:
                continue
            x = tf.constant(rng.random((batch, *layer.input.shape[1:])), tf.float32)
            dout = tf.constant(rng.standard_normal((batch, *layer.output.shape[1:])), tf.float32)
            mask = tf.constant(rng.random(x.shape) >= getattr(layer, "rate", 0.0))

            by_hand, by_tape = compiled_pair(layer, steps, x, dout, mask)
            choices = [step for step in steps if hasattr(step, "choose_fastest")]
            if choices:  # as the manual step does: time the formulations at these shapes, before compiling
                by_hand.python_function()  # eagerly, so that each step knows its shapes
                formulations = {name: round(seconds * 1e3, 3) for step in choices
                                for name, seconds in step.choose_fastest(tf.function).items()}
            times = {"manual": [], "tape": []}
            for fn in (by_hand, by_tape):
                [t.numpy() for t in fn()]  # trace and warm up
            for _ in range(args.calls):
                for name, fn in (("manual", by_hand), ("tape", by_tape)):
                    start = time.perf_counter()
                    [t.numpy() for t in fn()]
                    times[name].append(time.perf_counter() - start)
            manual_ms, tape_ms = (float(np.median(times[k]) * 1e3) for k in ("manual", "tape"))
            rows[layer.name] = {"manual_ms": round(manual_ms, 3), "tape_ms": round(tape_ms, 3),
                                "manual_over_tape": round(float(np.median(np.divide(times["manual"], times["tape"]))),
                                                          2)}
            if choices:
                rows[layer.name]["kernel_gradient_ms"] = formulations
                rows[layer.name]["kernel_gradient"] = choices[0].kernel_gradient
        result["layers"][str(batch)] = rows
        print(f"batch {batch}: " + ", ".join(f"{n} {r['manual_ms']:.2f}/{r['tape_ms']:.2f} ms "
                                             f"({r['manual_over_tape']:.2f}×)" for n, r in rows.items()),
              file=sys.stderr)
    print_json(result, also_to=args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
