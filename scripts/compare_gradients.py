"""Compare manual backprop, tf.GradientTape and finite differences for a model, per weight tensor."""
import argparse

from backprop_suite.errors import exit_cleanly_on_suite_error
from backprop_suite.gradient_report import compare_gradients
from backprop_suite.training import RESULTS_DIR
from models import MODEL_BUILDERS


@exit_cleanly_on_suite_error
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", choices=sorted(MODEL_BUILDERS), default="mnist_cnn")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                        help="of the manual and tape gradients; finite differences are always float64")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--fd-entries", type=int, default=32, help="finite-difference entries sampled per tensor")
    parser.add_argument("--directions", type=int, default=5, help="random directions of the directional check")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results-dir", default=RESULTS_DIR, help="default: %(default)s")
    args = parser.parse_args(argv)
    report = compare_gradients(args.model, args.dtype, args.results_dir, args.batch_size, args.fd_entries,
                               args.directions, args.seed)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
