"""`compare_gradients`: the three-way check and the directional check of a model, as a table, JSON and a plot."""
from pathlib import Path

import keras
import numpy as np

from backprop_suite import artifacts
from backprop_suite.datasets import load_dataset, to_model_inputs
from backprop_suite.gradcheck import TOLERANCES, directional_check, three_way_check
from backprop_suite.manual.twin import output_activation
from backprop_suite.provenance import environment
from models import build_model
from models.net_222 import NET_222_PARAMETERS

METHOD_PAIRS = ("manual_vs_tape", "manual_vs_finite_differences", "tape_vs_finite_differences")


def gradient_batch(model: keras.Model, batch_size: int, rng) -> tuple[np.ndarray, np.ndarray, dict, dict]:
    """Inputs, targets and dropout masks: real mnist-5k digits for 784-input models, random otherwise;
    and a description of the data (with its provenance when it is a dataset)."""
    input_shape = model.input_shape[1:]
    if int(np.prod(input_shape)) == 784 and output_activation(model) == "softmax":
        dataset = load_dataset("mnist-5k")
        x, t = to_model_inputs(dataset.train, input_shape)
        picked = rng.choice(len(x), batch_size, replace=False)
        x, t = x[picked].astype(np.float64), t[picked].astype(np.float64)
        data = {"description": "mnist-5k training digits", "provenance": dataset.provenance()}
    else:
        x = rng.standard_normal((batch_size, *input_shape))
        t = rng.random((batch_size, model.output_shape[-1]))
        data = {"description": "standard normal inputs, uniform [0, 1) targets", "provenance": None}
    masks = {layer.name: rng.random((batch_size, *layer.output.shape[1:])) >= layer.rate
             for layer in model.layers if isinstance(layer, keras.layers.Dropout)}
    return x, t, masks, data


BIAS_STD = 0.1
CHECK_POINT = f"Keras's initial weights with biases drawn from N(0, {BIAS_STD}²) (off the ReLU kinks)"


def gradient_model(name: str, rng) -> keras.Model:
    """A registry model at Keras's initialisation, but with biases drawn from N(0, BIAS_STD²).

    Keras initialises biases to 0; then every blank 3×3 patch of a digit gives a conv pre-activation
    of exactly 0, on the ReLU kink (C002-4), and finite differences of the biases are meaningless
    there. Random biases put the check at a generic, differentiable point. The 2-2-2 network, whose
    default weights are 0, gets all twelve parameters uniform in [-1, 1].
    """
    if name == "net_222":
        return build_model(name, parameters={p: rng.uniform(-1, 1) for p in NET_222_PARAMETERS})
    model = build_model(name)
    for layer in model.layers:
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.normal(0, BIAS_STD, layer.bias.shape))
    return model


def compare_gradients(model_name: str, dtype: str, results_root: Path, batch_size=8, fd_entries=32,
                      directions=5, seed=0) -> dict:
    """The `compare_gradients` command: print the table, write gradcheck.json and gradcheck.png."""
    report = gradient_check_report(model_name, dtype, batch_size, fd_entries, directions, seed)
    out_dir = Path(results_root) / model_name
    artifacts.write_json(out_dir / "gradcheck.json", report)
    plot_errors(report, out_dir / "gradcheck.png")
    print(format_table(report))
    print(f"\nwrote {out_dir / 'gradcheck.json'} and {out_dir / 'gradcheck.png'}")
    return report


def gradient_check_report(model_name: str, dtype: str, batch_size=8, fd_entries=32, directions=5, seed=0) -> dict:
    """Three-way and directional checks of a registry model on one batch, as JSON-ready data."""
    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    model = gradient_model(model_name, rng)
    x, t, masks, data = gradient_batch(model, batch_size, rng)
    report = {"model": model_name, "parameters": model.count_params(), "batch": {"size": batch_size, **data},
              "point": CHECK_POINT,
              "dropout_masks": sorted(masks), "tolerances": TOLERANCES, "seed": seed,
              "three_way": three_way_check(model, x, t, masks, dtype=dtype, fd_entries=fd_entries, seed=seed),
              "directional": directional_check(model, x, t, masks, directions=directions, seed=seed),
              "environment": environment()}
    report["passed"] = report["three_way"]["passed"] and report["directional"]["passed"]
    return report


def format_table(report: dict) -> str:
    """One row per weight tensor: max relative error of each method pair, kinks, verdict."""
    three_way = report["three_way"]
    by_tensor: dict[str, dict] = {}
    for c in three_way["comparisons"]:
        by_tensor.setdefault(c["tensor"], {})[c["methods"]] = c
    header = ("tensor", "entries", "FD entries", "manual~tape", "manual~FD", "tape~FD", "FD kinks", "verdict")
    rows = [(name, str(pairs["manual_vs_tape"]["entries"]), str(pairs["tape_vs_finite_differences"]["entries"]),
             *(f"{pairs[m]['max_rel_error']:.1e}" for m in METHOD_PAIRS),
             str(pairs["tape_vs_finite_differences"]["kinks"]),
             "PASS" if all(p["passed"] for p in pairs.values()) else "FAIL") for name, pairs in by_tensor.items()]
    lines = [f"{report['model']} ({report['parameters']:,} parameters), {three_way['dtype']}, batch of "
             f"{report['batch']['size']} ({report['batch']['description']}); max relative error per method pair "
             "(FD: float64 central differences on sampled entries).", "PASS: every entry has "
             "|a − b| <= atol + rtol·max(|a|, |b|), tolerances as documented in backprop_suite/gradcheck.py", ""]
    lines.append(artifacts.text_table(header, rows))
    d = report["directional"]
    checks = ", ".join(f"{k} {v['max_rel_error']:.1e}" for k, v in d["checks"].items())
    lines += ["", f"directional check over all {d['parameters']:,} parameters, {len(d['directions'])} random "
              f"directions (max relative error: {checks}): {'PASS' if d['passed'] else 'FAIL'} in {d['seconds']} s",
              f"verdict: {'PASS' if report['passed'] else 'FAIL'}"]
    return "\n".join(lines)


def plot_errors(report: dict, path: Path) -> None:
    """Per tensor and method pair, the worst error as a fraction of its tolerance (log scale): PASS below 1."""
    import matplotlib.pyplot as plt

    comparisons = report["three_way"]["comparisons"]
    tensors = list(dict.fromkeys(c["tensor"] for c in comparisons))
    figure, axes = plt.subplots(figsize=(max(6, 1.1 * len(tensors) + 2), 4.5), dpi=100)
    width = 0.8 / len(METHOD_PAIRS)
    for k, methods in enumerate(METHOD_PAIRS):
        ratios = [next(c["worst_over_tolerance"] for c in comparisons if c["tensor"] == t and c["methods"] == methods)
                  for t in tensors]
        axes.bar(np.arange(len(tensors)) + (k - 1) * width, np.maximum(ratios, 1e-12), width, label=methods)
    axes.axhline(1.0, color="red", linestyle="--", linewidth=1, label="tolerance (PASS below)")
    axes.set(yscale="log", ylabel="worst |a − b| / (atol + rtol·max(|a|, |b|))",
             title=f"{report['model']}: gradient agreement ({report['three_way']['dtype']})")
    axes.set_xticks(np.arange(len(tensors)), tensors, rotation=30, ha="right")
    axes.legend(fontsize=7)
    artifacts.save_figure(figure, path)
