"""Train one experiment: `python scripts/train.py c003_1_mnist_cnn_quick` (a name in experiments/ or a .toml path)."""
import argparse
import os
import sys

from backprop_suite import distribute
from backprop_suite.errors import SpecError, exit_cleanly_on_suite_error
from backprop_suite.experiment import load_spec
from backprop_suite.training import RESULTS_DIR, train_experiment


@exit_cleanly_on_suite_error
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("experiment", help="experiment name (file stem in experiments/) or path to a spec .toml")
    parser.add_argument("--data-path",
                        help="a Keras .npz or a folder with the four IDX files (overrides every other source)")
    parser.add_argument("--results-dir", default=RESULTS_DIR,
                        help="where results/<experiment>/ goes (default: %(default)s)")
    parser.add_argument("--restart", action="store_true", help="discard an interrupted run instead of resuming it")
    parser.add_argument("--strategy", choices=distribute.STRATEGIES, default="default",
                        help="default: one device; mirrored: all local GPUs, else --cpu-devices logical CPU devices; "
                             "multiworker: the cluster in TF_CONFIG, one process per worker. The spec's batch "
                             "size is the global batch, split over the replicas (default: %(default)s)")
    parser.add_argument("--cpu-devices", type=int, default=2,
                        help="logical CPU devices for --strategy mirrored without GPUs (default: %(default)s)")
    parser.add_argument("--peer-timeout", type=float, default=distribute.PEER_TIMEOUT_S, metavar="SECONDS",
                        help="multiworker: how long to wait for the other workers to start (default: %(default)s)")
    parser.add_argument("--save-weights", metavar="PATH",
                        help="also save the trained weights (.weights.h5; {worker} becomes the worker's index)")
    args = parser.parse_args(argv)
    if not args.peer_timeout > 0:
        raise SpecError(f"--peer-timeout {args.peer_timeout}: give a positive number of seconds")
    if args.save_weights and not args.save_weights.endswith(".weights.h5"):
        raise SpecError(f"--save-weights {args.save_weights}: Keras needs a name ending in .weights.h5")
    spec = load_spec(args.experiment)
    if spec.kind != "training":
        raise SpecError(f"{spec.path} is a worked example, not a training run: "
                        f"run it with `python scripts/reproduce.py --only {spec.name}`")
    if args.strategy == "mirrored" and not distribute.has_gpus():
        distribute.split_cpu(args.cpu_devices)  # before TensorFlow's runtime starts
    if args.strategy == "multiworker" and distribute.CHILD_ENV not in os.environ:
        config = distribute.check_tf_config(os.environ.get("TF_CONFIG"))  # bad TF_CONFIG: one line, no child
        return distribute.supervise_worker(sys.argv, config["cluster"]["worker"], int(config["task"]["index"]),
                                           args.peer_timeout)
    strategy = distribute.make_strategy(args.strategy)
    record = train_experiment(spec, args.results_dir, args.data_path, args.restart, strategy, args.save_weights)
    return 1 if record["verdict"] == "failed" else 0


if __name__ == "__main__":
    raise SystemExit(main())
