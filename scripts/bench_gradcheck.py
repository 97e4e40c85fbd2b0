"""Benchmark (not a test): what the full gradient check costs, in seconds and in forward+backward passes of the model
it checks (its time ÷ one float64 forward+backward, compiled, measured in the same process), with check_gradients's
defaults: keras.applications ResNet50, MobileNetV2, EfficientNetB0, DenseNet121 and ConvNeXtTiny (weights=None,
224×224, batch 2, float64) and every zoo model. Writes this backend's run into results/bench_gradcheck.json (runs on
other backends are kept) and prints a table.

    python scripts/bench_gradcheck.py                                   # everything, TensorFlow
    KERAS_BACKEND=jax python scripts/bench_gradcheck.py --models zoo,ResNet50
"""
import argparse
import json
from pathlib import Path

from backprop_suite import cli
from backprop_suite.errors import exit_cleanly_on_input_error
from gradcheck.errors import InputError

GROUPS = ("imagenet", "zoo")


@exit_cleanly_on_input_error
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="imagenet,zoo",
                        help="comma-separated model names, or the groups imagenet and zoo (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=cli.RESULTS_DIR / "bench_gradcheck.json",
                        help="default: %(default)s")
    cli.add_backend_argument(parser)
    args = parser.parse_args(argv)
    backend = cli.select_backend(args.backend)
    cli.load_tensorflow_quietly()
    from backprop_suite import artifacts, bench
    from backprop_suite.models.zoo import ZOO

    artifacts.require_writable_folder(args.out.parent, "--out")
    names = []
    for item in filter(None, (part.strip() for part in args.models.split(","))):
        group = {"imagenet": list(bench.IMAGENET_MODELS), "zoo": list(ZOO)}.get(item, [item])
        unknown = [name for name in group if name not in bench.IMAGENET_MODELS and name not in ZOO]
        if unknown:
            raise InputError(f"--models: {', '.join(unknown)} is not a benchmarked model; give {', '.join(GROUPS)} or "
                             f"names among {', '.join(bench.IMAGENET_MODELS)}, {', '.join(ZOO)}")
        names += [name for name in group if name not in names]
    if not names:
        raise InputError("--models: no model named; give imagenet, zoo or model names, comma-separated")
    earlier = _earlier_runs(args.out)
    from backprop_suite.provenance import environment

    command = f"KERAS_BACKEND={backend} python scripts/bench_gradcheck.py --models {args.models}"

    def write(costs):  # after each model: an interrupted run keeps what it measured
        artifacts.write_json(args.out, {
            "question": "What does the full gradient check of a model cost, in forward+backward passes of that model?",
            "runs": {**earlier, backend: {"command": command, "costs": costs, "complete": len(costs) == len(names),
                                          "environment": environment()}}})

    costs = bench.verifier_costs(names, write)
    rows = [(name, f"{c['parameters']:,}", str(c["layer_calls"]), f"{c['check_s']:.1f}",
             f"{c['forward_backward_s']:.3f}", f"{c['passes']:.0f}", "PASS" if c["passed"] else "FAIL")
            for name, c in costs.items()]
    print(artifacts.text_table(("model", "parameters", "layer calls", "check, s", "fwd+bwd, s", "passes", "verdict"),
                               rows))
    print(f"wrote {args.out}")
    return 0 if all(c["passed"] for c in costs.values()) else 1


def _earlier_runs(path: Path) -> dict:
    """The other backends' runs already in the file (a file of another shape, or none, has none)."""
    try:
        runs = json.loads(path.read_text()).get("runs", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return runs if isinstance(runs, dict) else {}


if __name__ == "__main__":
    raise SystemExit(main())
