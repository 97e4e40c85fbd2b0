"""Does data-parallel backprop compute the single-device gradient? On `--devices` logical CPU devices
(MirroredStrategy), float64: the all-reduced gradient of a global batch vs one device's, per tensor,
and the weights after a few SGD steps vs Keras `fit` on one device. Writes results/distributed/."""
import argparse
from pathlib import Path

from backprop_suite import cli
from backprop_suite.errors import exit_cleanly_on_input_error
from gradcheck.errors import InputError


@exit_cleanly_on_input_error
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=2, help="logical CPU devices (default: %(default)s)")
    parser.add_argument("--models", nargs="+", default=["two_layer_net", "mnist_cnn"], choices=cli.REGISTRY)
    parser.add_argument("--batch-size", type=int, default=16, help="global batch (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=5, help="SGD steps compared (default: %(default)s)")
    parser.add_argument("--results-dir", type=Path, default=cli.RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.devices < 2 or args.batch_size % args.devices or args.steps < 1:
        raise InputError("--devices must be ≥ 2 and divide --batch-size; --steps must be ≥ 1")
    cli.load_tensorflow_quietly()
    from backprop_suite import distribute

    distribute.split_cpu(args.devices)  # before anything else starts TensorFlow's runtime

    from backprop_suite.artifacts import text_table, write_json
    from backprop_suite.equivalence import equivalence_report
    from backprop_suite.provenance import environment

    strategy = distribute.make_strategy("mirrored")
    reports = [equivalence_report(strategy, name, args.batch_size, args.steps) for name in args.models]
    rows = [(r["model"], f"{r['parameters']:,}", r["replicas"], f"{r['max_gradient_relative_difference']:.1e}",
             f"{r['max_gradient_abs_difference']:.1e}", f"{r['max_weight_relative_difference_after_steps']:.1e}",
             "PASS" if r["passed"] else "FAIL") for r in reports]
    print(text_table(("model", "parameters", "replicas", "gradient max rel diff", "gradient max abs diff",
                      f"weights after {args.steps} SGD steps, max rel diff", "verdict"), rows))
    out = args.results_dir / "distributed" / "equivalence.json"
    write_json(out, {"question": "Does the all-reduced (mean) gradient on several devices equal the single-device "
                                 "gradient of the same global batch?", "reports": reports,
                     "environment": environment()})
    print(f"wrote {out}")
    return 0 if all(r["passed"] for r in reports) else 1


if __name__ == "__main__":
    raise SystemExit(main())
