"""Check a model's gradients three ways: hand-derived backward formulas, the framework's autodiff and
float64 central differences, layer by layer (each layer alone at the batch's activations), per weight tensor, plus a
directional check over all parameters.

--model takes a registry name (the suite's models; their reports are the reference results in results/),
a PATH.keras saved with model.save, or package.module:function returning a built Keras model."""
import argparse
import hashlib
from pathlib import Path

from backprop_suite import cli
from backprop_suite.artifacts import require_writable_folder
from backprop_suite.cli import REGISTRY
from backprop_suite.errors import exit_cleanly_on_input_error
from gradcheck.errors import InputError

VARIED = ("dtype", "batch_size", "fd_entries", "directions", "seed", "training", "loss", "imports")


def validate(args, backend: str, defaults: dict) -> Path:
    """Every argument checked before anything is computed or written; returns where the report goes. A registry
    model's report with every default, on TensorFlow, is the reference (results/<model>/); any variation goes to a
    folder named after what differs, results/<model>+dtype=float32+seed=7/, so it never replaces the reference."""
    model = args.model
    if model not in REGISTRY and not model.endswith(".keras") and ":" not in model:
        raise InputError(f"--model {model!r}: give a registry name ({', '.join(REGISTRY)}), a PATH.keras file "
                         "or package.module:function")
    if model.endswith(".keras"):
        check_keras_file(Path(model))
    if args.data is not None and not args.data.is_file():
        raise InputError(f"--data {args.data}: file not found; save one with numpy.savez(path, x=inputs, y=targets)")
    if args.out is None and model not in REGISTRY:
        raise InputError(f"--model {model}: say where the report goes with --out DIR (a user's check never writes "
                         "into the suite's results/)")
    out = args.out if args.out is not None else args.results_dir / variation_name(args, backend, defaults)
    for folder in (out, *out.parents):
        if folder.exists():
            if not folder.is_dir():
                raise InputError(f"--out {out}: {folder} is a file, not a folder; choose another --out")
            break
    require_writable_folder(out, "--out")
    return out


def variation_name(args, backend: str, defaults: dict) -> str:
    """<model>, or <model>+<what differs from the reference check>: dtype, batch size, seed, data (by its file's
    SHA-256), backend..."""
    changes = [f"{key}={'+'.join(value) if isinstance(value, list) else value}" for key in VARIED
               if (value := getattr(args, key)) != defaults[key]]
    if args.data is not None:
        changes.append(f"data={hashlib.sha256(args.data.read_bytes()).hexdigest()[:12]}")
    if backend != cli.DEFAULT_BACKEND:
        changes.append(f"backend={backend}")
    return "+".join([args.model, *changes])


def check_keras_file(path: Path) -> None:
    """A .keras file is a zip archive (model.save writes one): anything else is named here, not by Keras."""
    if not path.is_file():
        raise InputError(f"--model {path}: file not found")
    with open(path, "rb") as stream:
        start = stream.read(4)
    if start != b"PK\x03\x04":
        raise InputError(f"--model {path}: not a Keras .keras archive (it starts with {start!r}, not a zip header); "
                         "save the model with model.save('name.keras')")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mnist_cnn", help="registry name, PATH.keras or package.module:function "
                                                              "(default: %(default)s)")
    parser.add_argument("--data", type=Path, help="an .npz with arrays x and y (x0, x1, ... for several inputs); "
                                                  "default: the registry's batch, else random inputs and targets")
    parser.add_argument("--out", type=Path, help="folder for gradcheck.json and gradcheck.png "
                                                 "(default for a registry model: results/<model>/)")
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="import MODULE first (it registers your custom layers); repeatable")
    parser.add_argument("--loss", help="a Keras loss name (default: the model's compiled loss, else the one "
                                       "paired with its output activation)")
    parser.add_argument("--training", action="store_true",
                        help="check the training-mode function (BatchNorm batch statistics, dropout masks)")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                        help="of the manual and autodiff gradients; finite differences are always float64")
    parser.add_argument("--batch-size", type=cli.positive_int, default=8)
    parser.add_argument("--fd-entries", type=cli.positive_int, default=None,
                        help="entries per tensor sampled by finite differences of the whole model (default: 32 for "
                             "the tensors no layer's own check covers; every layer is checked alone first)")
    parser.add_argument("--directions", type=cli.positive_int, default=5,
                        help="random directions of the directional check")
    parser.add_argument("--seed", type=cli.seed, default=0)
    parser.add_argument("--results-dir", type=Path, default=cli.RESULTS_DIR, help="default: %(default)s")
    cli.add_backend_argument(parser)
    args = parser.parse_args(argv)
    return run(args, {key: parser.get_default(key) for key in VARIED})


@exit_cleanly_on_input_error
def run(args, defaults: dict) -> int:
    backend = cli.select_backend(args.backend)
    out = validate(args, backend, defaults)
    cli.load_tensorflow_quietly()
    from backprop_suite.check_gradients import check_model

    report = check_model(args.model, args.dtype, out, args.data, args.batch_size, args.fd_entries,
                               args.directions, args.seed, args.training, args.loss, args.imports)
    return 0 if report.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
