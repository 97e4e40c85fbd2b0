"""Where the compiled GradientTape step of the C003-1 CNN spends its time, op by op: how close each
convolution and matrix product comes to the float32 matmul limit, what the other ops cost, and the ceiling
on the step's share of the limit if those others took no time at all.

The ops run one at a time (inter-op threads 1), so that their times add up to the step; the step's own
time is measured in the same process, the precisions in alternation, on the mnist-5k digits the bench uses.
JSON on stdout (and --out), a table on stderr.

    .venv/bin/python scripts/profile_step_ops.py --out results/step_op_profile.json
"""
import argparse
import itertools
import sys
import time
from pathlib import Path

from backprop_suite import cli
from backprop_suite.artifacts import print_json, require_writable_folder, text_table
from backprop_suite.errors import exit_cleanly_on_input_error

TIMED_STEPS = 20  # steps per timing, each precision in turn


def timed_steps(step, batches) -> float:
    """Milliseconds per step over TIMED_STEPS steps, waiting for the last."""
    start = time.perf_counter()
    for i in range(TIMED_STEPS):
        loss = step(*batches[i % len(batches)])
    float(loss)
    return (time.perf_counter() - start) / TIMED_STEPS * 1e3


def one_step_at_a_time(step, batches):
    """A call that trains the next batch (cycling) and waits for its loss."""
    feed = itertools.cycle(batches)
    return lambda: float(step(*next(feed)))


def print_table(precision: str, summary: dict) -> None:
    print(f"\n{precision}, batch {summary['batch_size']}: step {summary['step_ms']:.2f} ms, its ops "
          f"{summary['ops_ms']:.2f} ms: products {summary['products_ms']:.2f}, the rest {summary['other_ms']:.2f}; "
          f"{summary['fraction_of_limit']:.0%} of the float32 limit, "
          f"{summary['fraction_of_limit_if_only_products']:.0%} if the rest took no time", file=sys.stderr)
    print(text_table(("product", "ms", "of the limit"),
                     [(f"{p['layer']} {p['direction']} ({p['type']})", f"{p['ms']:.2f}",
                       f"{p['fraction_of_limit']:.0%}") for p in summary["products"]]), file=sys.stderr)
    print(text_table(("layer or scope", "forward ms", "backward ms"),
                     [(owner, f"{t['forward_ms']:.2f}", f"{t['backward_ms']:.2f}")
                      for owner, t in summary["by_layer"].items() if sum(t.values()) >= 0.05]), file=sys.stderr)


@exit_cleanly_on_input_error
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=cli.positive_int, default=128)
    parser.add_argument("--precisions", nargs="+", choices=cli.PRECISIONS, default=list(cli.PRECISIONS))
    parser.add_argument("--calls", type=cli.positive_int, default=30, help="steps traced per precision")
    parser.add_argument("--rounds", type=cli.positive_int, default=7,
                        help=f"timings of {TIMED_STEPS} steps per precision, in alternation (median)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.out is not None:
        require_writable_folder(args.out.parent, "--out")
    cli.load_tensorflow_quietly()
    import keras
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(1)  # ops one at a time: their times add up to the step
    from backprop_suite import bench, op_profile
    from backprop_suite.models import build_model
    from backprop_suite.provenance import environment
    from backprop_suite.steps import tape_step
    from gradcheck.dtypes import global_dtype_policy

    x, y, data = bench.training_data()
    bench.check_batch_sizes([args.batch_size], len(x), "--batch-size")
    batches = bench.step_batches(x, y, args.batch_size)
    models, steps = {}, {}
    for precision in args.precisions:
        keras.utils.set_random_seed(bench.SEED)
        with global_dtype_policy(precision):
            models[precision] = build_model("mnist_cnn")
        steps[precision] = tape_step(models[precision], keras.optimizers.Adam(1e-3))
        for _ in range(3):
            timed_steps(steps[precision], batches)  # tracing, first allocations
    step_ms, rates = {p: [] for p in args.precisions}, []
    for number in range(args.rounds):
        rates.append(bench.matmul_flops_per_second())
        for precision in args.precisions:
            step_ms[precision].append(timed_steps(steps[precision], batches))
        print(f"[profile] round {number + 1}/{args.rounds}: matmul {rates[-1] / 1e9:.0f} GFLOP/s, "
              + ", ".join(f"{p} {ms[-1]:.2f} ms/step" for p, ms in step_ms.items()), file=sys.stderr)
    rate = float(np.median(rates))
    result = {"command": " ".join(["scripts/profile_step_ops.py", *(argv if argv is not None else sys.argv[1:])]),
              "environment": environment(), "thread_settings": bench.thread_settings(), "data": data,
              "matmul_float32_flops_per_second": rate, "precisions": {}}
    for precision in args.precisions:
        times = op_profile.traced_op_times(one_step_at_a_time(steps[precision], batches), args.calls)
        summary = op_profile.summarise_step(times, models[precision], args.batch_size,
                                            float(np.median(step_ms[precision])), rate)
        result["precisions"][precision] = summary
        print_table(precision, summary)
    if len(args.precisions) == 2:  # within-round speed-ups of bf16 over float32, and of its parts (one trace each)
        f32, bf16 = (result["precisions"][p] for p in cli.PRECISIONS)
        result["bf16_speedup"] = {
            "step": float(np.median(np.divide(step_ms["float32"], step_ms["mixed_bfloat16"]))),
            "products": f32["products_ms"] / bf16["products_ms"], "other": f32["other_ms"] / bf16["other_ms"]}
    print_json(result, also_to=args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
