"""Train one experiment: `python scripts/train.py c003_1_mnist_cnn_quick` (a name in experiments/ or a .toml path).

--dataset, --epochs, --batch-size, --learning-rate, --precision and --backend (or KERAS_BACKEND) override the spec
for a variation of it: that run goes to results/<experiment>+<changes>/, records the overrides in metrics.json, and
its verdict is "measured only"."""
import argparse
import importlib.util
import os
import sys

from backprop_suite import cli
from backprop_suite.artifacts import require_writable_file, require_writable_folder
from backprop_suite.datasets import DATA_PATH_DATASET, DATASET_NAMES
from backprop_suite.errors import SpecError, exit_cleanly_on_input_error
from backprop_suite.experiment import load_spec, with_overrides


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", help="experiment name (file stem in experiments/) or path to a spec .toml")
    parser.add_argument("--dataset", choices=DATASET_NAMES, help="train on this dataset instead of the spec's")
    parser.add_argument("--epochs", type=cli.positive_int, help="instead of the spec's epochs")
    parser.add_argument("--batch-size", type=cli.positive_int, help="instead of the spec's batch size")
    parser.add_argument("--learning-rate", type=cli.positive_float, help="instead of the spec's learning rate")
    parser.add_argument("--precision", choices=cli.PRECISIONS,
                        help="instead of the spec's: mixed_bfloat16 computes in bfloat16 with float32 weights "
                             "(about 1.7× faster on CPUs with AVX512-BF16 or AMX)")
    parser.add_argument("--data-path",
                        help="full MNIST as a Keras .npz or a folder with the four IDX files, for a spec on `mnist` "
                             "(or with --dataset mnist); it overrides every other source")
    parser.add_argument("--results-dir", default=cli.RESULTS_DIR,
                        help="where results/<experiment>/ goes (default: %(default)s)")
    parser.add_argument("--restart", action="store_true", help="discard an interrupted run instead of resuming it")
    parser.add_argument("--tensorboard", metavar="DIR",
                        help="also log to DIR for TensorBoard (`tensorboard --logdir DIR`; needs the tensorboard "
                             "package, in requirements.txt)")
    parser.add_argument("--strategy", choices=cli.STRATEGIES, default="default",
                        help="default: one device; mirrored: all local GPUs, else --cpu-devices logical CPU devices; "
                             "multiworker: the cluster in TF_CONFIG, one process per worker. The spec's batch "
                             "size is the global batch, split over the replicas (default: %(default)s)")
    parser.add_argument("--cpu-devices", type=int, default=2,
                        help="logical CPU devices for --strategy mirrored without GPUs (default: %(default)s)")
    parser.add_argument("--peer-timeout", type=float, default=cli.PEER_TIMEOUT_S, metavar="SECONDS",
                        help="multiworker: how long to wait for the other workers to start (default: %(default)s)")
    parser.add_argument("--save-weights", metavar="PATH",
                        help="also save the trained weights (.weights.h5; {worker} becomes the worker's index)")
    cli.add_backend_argument(parser)
    return parser.parse_args(argv)


@exit_cleanly_on_input_error
def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.peer_timeout > 0:
        raise SpecError(f"--peer-timeout {args.peer_timeout}: give a positive number of seconds")
    if args.save_weights and not args.save_weights.endswith(".weights.h5"):
        raise SpecError(f"--save-weights {args.save_weights}: Keras needs a name ending in .weights.h5")
    if args.tensorboard and args.strategy == "multiworker":
        raise SpecError("--tensorboard: not available with --strategy multiworker (its loop is not Keras fit); "
                        "drop --tensorboard, or train with --strategy default or mirrored")
    if args.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise SpecError("--tensorboard: the tensorboard package is not installed; pip install tensorboard==2.21.0")
    if args.tensorboard:
        require_writable_folder(args.tensorboard, "--tensorboard")
    if args.save_weights:
        require_writable_file(args.save_weights.replace("{worker}", "0"), "--save-weights")
    spec = load_spec(args.experiment, registries=False)  # a typo in the spec: said before TensorFlow loads
    if spec.kind != "training":
        raise SpecError(f"{spec.path} is a worked example, not a training run: "
                        f"run it with `python scripts/reproduce.py --only {spec.name}`")
    dataset = args.dataset or spec.dataset
    if args.data_path is not None and dataset != DATA_PATH_DATASET:
        raise SpecError(f"--data-path {args.data_path}: it gives full MNIST, and {spec.name} trains on {dataset}; "
                        f"add --dataset {DATA_PATH_DATASET} to train it on that file (a variation, in its own folder)"
                        + (", or drop --data-path: fashion-mnist is read from $KERAS_HOME/datasets/fashion-mnist or "
                           "Debian's /usr/share/datasets/fashion-mnist" if dataset == "fashion-mnist" else ""))
    backend = cli.select_backend(args.backend)
    with_overrides(spec, dataset=args.dataset, epochs=args.epochs, batch_size=args.batch_size,
                   learning_rate=args.learning_rate, precision=args.precision, backend=backend)  # refused now if bad
    if backend != "tensorflow" and args.strategy != "default":
        raise SpecError(f"--strategy {args.strategy}: tf.distribute needs the tensorflow backend; drop --strategy "
                        f"to train on {backend} with one device")
    cli.load_tensorflow_quietly()
    from backprop_suite import distribute
    from backprop_suite.training import train_experiment

    spec = with_overrides(load_spec(args.experiment), dataset=args.dataset, epochs=args.epochs,
                          batch_size=args.batch_size, learning_rate=args.learning_rate, precision=args.precision,
                          backend=backend)
    if args.strategy == "mirrored" and not distribute.has_gpus():
        distribute.split_cpu(args.cpu_devices)  # before TensorFlow's runtime starts
    if args.strategy == "multiworker" and distribute.CHILD_ENV not in os.environ:
        config = distribute.check_tf_config(os.environ.get("TF_CONFIG"))  # bad TF_CONFIG: one line, no child
        return distribute.supervise_worker(sys.argv, config["cluster"]["worker"], int(config["task"]["index"]),
                                           args.peer_timeout)
    strategy = distribute.make_strategy(args.strategy)
    record = train_experiment(spec, args.results_dir, args.data_path, args.restart, strategy, args.save_weights,
                              tensorboard=args.tensorboard)
    return 1 if record["verdict"] == "failed" else 0


if __name__ == "__main__":
    raise SystemExit(main())
