"""The same Keras model, weights and batch on TensorFlow, JAX and PyTorch: does every backend's autodiff give
the gradients TensorFlow's tape gives, and do the manual formulas give them on every backend? (float64)

A gradient difference is measured relative to the model's largest gradient on TensorFlow's tape: the largest
max|a − b| over the tensors, over the largest |b| over them. Rounding in float64 sums of up to ~10⁴ terms stays near
1e-14, so the bound 1e-12 leaves room for other kernels' summation orders; a formula or a forward that differs shows
up far above it. Not relative to each tensor's own largest entry: a tensor whose gradient is zero by symmetry (an
attention's key bias, since the softmax ignores a shift shared by a row of scores) holds rounding noise alone, and
two correct computations' noises differ by their own size (measured: 0.6 to 1.9 "relative" on the Transformer).
"""
import functools

import keras
import numpy as np

from backprop_suite import artifacts
from backprop_suite.check_gradients import gradient_batch
from backprop_suite.cross_backend import build_named, gradients_here, run_on_backend
from backprop_suite.models.zoo import ZOO
from backprop_suite.worked_examples.result import WorkedResult
from gradcheck import autodiff
from gradcheck.backends import TORCH_SAME_AVERAGE_POOLING
from gradcheck.check import random_batch

REFERENCE = "tensorflow"
# Where Keras's own forward differs between backends: not a gradient error, the backends compute other functions.
KNOWN_DIFFERENCES = {
    ("pooling_and_reshaping", "torch"): TORCH_SAME_AVERAGE_POOLING,  # its AveragePooling2D is 'same'-padded
}
TINY = 1e-300


def relative_difference(a, b) -> float:
    """max|a − b| / max|b|: the difference relative to the reference tensor's largest entry."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max(initial=0) / max(np.abs(b).max(initial=0), TINY))


def cross_backend_agreement(models: tuple = ("net_222", "two_layer_net", "mnist_cnn", *ZOO), batch_size: int = 4,
                            backends: tuple = autodiff.BACKENDS, seed: int = 0) -> WorkedResult:
    models = [m for m in models if m != "subclassed_mlp"]  # its weights are made by its first call: no fixed shapes
    jobs, descriptions = {}, {}
    rng = np.random.default_rng(seed)
    for name in models:
        keras.utils.set_random_seed(seed)  # the same weights run after run, so the report's numbers repeat
        model, loss = build_named(name)
        if name in ZOO:
            x, t = random_batch(model, batch_size, loss, seed=seed)
            integer = any(np.issubdtype(np.asarray(v).dtype, np.integer) for v in (x if isinstance(x, list) else [x]))
            masks, descriptions[name] = None, "random token ids" if integer else "standard normal inputs"
        else:
            x, t, masks, data = gradient_batch(model, batch_size, rng)
            descriptions[name] = data["description"]
        jobs[name] = ([w.astype(np.float64) for w in model.get_weights()], x, t, masks or None)
    results = {backend: ({name: gradients_here(name, *job) for name, job in jobs.items()}
                         if backend == autodiff.BACKEND else run_on_backend(backend, jobs))
               for backend in backends}
    rows = compare_backends(results, models)
    agreeing = [r for r in rows if (r["model"], r["backend"]) not in KNOWN_DIFFERENCES]
    known = [r for r in rows if (r["model"], r["backend"]) in KNOWN_DIFFERENCES]
    metrics = {
        "backends": len(backends), "models": len(models),
        "worst_loss_difference": max(r["loss"] for r in agreeing),
        "worst_autodiff_difference": max(r["autodiff"] for r in agreeing if r["backend"] != REFERENCE),
        "worst_manual_difference": max((r["manual"] for r in agreeing if r["manual"] is not None), default=np.nan),
        "models_with_manual_on_every_backend": sum(all(r["manual"] is not None for r in rows if r["model"] == m)
                                                   for m in models),
        **{f"{model}_on_{backend}_loss_difference": r["loss"]
           for r in known for model, backend in [(r["model"], r["backend"])]},
    }
    text = format_rows(rows, descriptions)
    return WorkedResult(metrics, text, {"cross_backend.png": functools.partial(plot_differences, rows)},
                        details={"rows": rows, "known_differences": {f"{m} on {b}": why for (m, b), why
                                                                     in KNOWN_DIFFERENCES.items()},
                                 "versions": {b: results[b][models[0]]["backend_version"] for b in backends}},
                        captions={"cross_backend.png": CAPTION})


def compare_backends(results: dict, models: list) -> list[dict]:
    """One row per model and backend: loss, autodiff and manual gradients against TensorFlow's tape."""
    rows = []
    for name in models:
        reference = results[REFERENCE][name]
        for backend, by_model in results.items():
            result = by_model[name]
            manual = result.get("manual")
            rows.append({
                "model": name, "backend": backend,
                "loss": relative_difference(result["loss"], reference["loss"]),
                "autodiff": _worst(result["tape"], reference["tape"]),
                "manual": None if manual is None else _worst(manual, reference["tape"]),
                "manual_missing": result["manual_missing"],
                "known_difference": KNOWN_DIFFERENCES.get((name, backend))})
    return rows


def _worst(gradients: dict, reference: dict) -> float:
    """The largest difference over the tensors relative to the model's largest reference gradient (module
    docstring), tensors paired by position: a process names the layers a model builder leaves unnamed by how many
    it built before (conv2d_2 in one, conv2d in another)."""
    pairs = [(np.asarray(a, np.float64), np.asarray(b, np.float64))
             for a, b in zip(gradients.values(), reference.values(), strict=True)]
    if any(a.shape != b.shape for a, b in pairs):
        raise ValueError("the backends' models have differently shaped weights")
    largest = max(max(np.abs(b).max(initial=0) for _, b in pairs), TINY)
    return max(float(np.abs(a - b).max(initial=0)) for a, b in pairs) / largest


def format_rows(rows: list[dict], descriptions: dict) -> str:
    """The table: each row's largest relative difference from TensorFlow's tape (0 where bit-identical)."""
    header = ("model", "backend", "loss", "autodiff grads", "manual grads", "note")
    table = [(r["model"], r["backend"], f"{r['loss']:.1e}", f"{r['autodiff']:.1e}",
              "—" if r["manual"] is None else f"{r['manual']:.1e}",
              r["known_difference"] or ("manual: no formula for " + "; ".join(r["manual_missing"])
                                        if r["manual_missing"] else ""))
             for r in rows]
    return "\n".join(["Largest difference from TensorFlow's tape: the loss's relative to the loss, the gradients' "
                      "relative to the model's largest gradient "
                      "(float64, one batch per model: " + "; ".join(f"{m}: {d}" for m, d in descriptions.items())
                      + "). Agreement bound: 1e-12.", "", artifacts.text_table(header, table)])


def plot_differences(rows: list[dict], path) -> None:
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    series = [(backend, method) for backend in ("jax", "torch", REFERENCE) for method in ("autodiff", "manual")
              if not (backend == REFERENCE and method == "autodiff")]
    colors = {"jax": "tab:purple", "torch": "tab:orange", REFERENCE: "tab:blue"}
    floor = 1e-18
    figure, axes = plt.subplots(figsize=(max(8, 1.1 * len(models) + 2), 4.8), dpi=100)
    width = 0.8 / len(series)
    for k, (backend, method) in enumerate(series):
        values = []
        for model in models:
            row = next((r for r in rows if r["model"] == model and r["backend"] == backend), None)
            values.append(np.nan if row is None or row[method] is None else max(row[method], floor))
        positions = np.arange(len(models)) + (k - (len(series) - 1) / 2) * width
        bars = axes.bar(positions, values, width, color=colors[backend], alpha=1.0 if method == "autodiff" else 0.55,
                        hatch="" if method == "autodiff" else "//", label=f"{backend} {method}")
        for bar, model in zip(bars, models, strict=True):
            if (model, backend) in KNOWN_DIFFERENCES and np.isfinite(bar.get_height()):
                bar.set_edgecolor("red")
                bar.set_linewidth(1.5)
                axes.annotate("known: Keras's forward\ndiffers on this backend", (bar.get_x(), bar.get_height()),
                              xytext=(-6, -4), textcoords="offset points", ha="right", va="top", fontsize=7,
                              color="red")
    axes.axhline(1e-12, color="red", linestyle="--", linewidth=1, label="agreement bound 1e-12")
    axes.set(yscale="log", ylim=(floor / 2, 10), ylabel="max|g − g_TF tape| / max|g_TF tape| (0 drawn at 1e-18)",
             title="The same weights and batch on three Keras backends: gradients vs TensorFlow's tape (float64)")
    axes.set_xticks(np.arange(len(models)), models, rotation=30, ha="right")
    axes.grid(alpha=0.3, axis="y")
    axes.legend(fontsize=7, ncol=3)
    artifacts.save_figure(figure, path)


CAPTION = ("What to look for: every bar under the red dashed line (agreement to rounding); a bar outlined in red is "
           "a model whose forward Keras computes differently on that backend (the table says why).")
