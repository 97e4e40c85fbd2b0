"""A gradient check's report: the per-tensor table (str), JSON, a plot, and the message assert_gradients raises."""
import json
from pathlib import Path

import numpy as np

from gradcheck import files

METHOD_PAIRS = ("manual_vs_tape", "manual_vs_finite_differences", "tape_vs_finite_differences")


class GradientReport:
    """What check_gradients found: `passed`, `str()` the table, `to_json()`, `save(directory)`, `plot(path)`."""

    def __init__(self, data: dict):
        self.data = data

    @property
    def passed(self) -> bool:
        return bool(self.data["passed"])

    def __str__(self) -> str:
        return format_table(self.data)

    def __repr__(self) -> str:
        return f"<GradientReport {self.data['model']}: {'PASS' if self.passed else 'FAIL'}>"

    def to_json(self) -> str:
        return json.dumps(self.data, indent=2, ensure_ascii=False)

    def plot(self, path) -> None:
        plot_errors(self.data, Path(path))

    def save(self, directory) -> tuple[Path, Path]:
        """Write gradcheck.json and gradcheck.png into `directory` (atomically); return their paths."""
        directory = Path(directory)
        paths = directory / "gradcheck.json", directory / "gradcheck.png"
        self.plot(paths[1])
        files.write_json(paths[0], self.data)  # last: the record names a finished check
        return paths

    def failures(self) -> list[dict]:
        """Every failed comparison: per tensor, worst first (they name an entry), then the directional checks."""
        def worst_first(comparisons):
            return sorted((c for c in comparisons if not c["passed"]), key=lambda c: -c["worst_over_tolerance"])

        directional = [{**c, "tensor": f"all parameters, directional ({key})"}
                       for key, c in self.data["directional"]["checks"].items()]
        return worst_first(self.data["three_way"]["comparisons"]) + worst_first(directional)

    def failing_layers(self) -> list[dict]:
        """The rows of the layers whose own check failed, in topological order (the first is the likeliest culprit:
        a layer's check reads the activations above it, not the gradients from below)."""
        return [row for row in self.data.get("layers", {}).get("calls", []) if not row["passed"]]

    def failure_message(self) -> str:
        model = self._model_failure_message()
        layers = self.failing_layers()
        if not layers:
            return model
        others = f"; {len(layers) - 1} more failing layer(s): {', '.join(r['layer'] for r in layers[1:6])}" \
            if len(layers) > 1 else "; no other layer's own check fails"
        lines = [f"{self.data['model']}: gradient check FAILED; first failing layer: {layers[0]['failure']}{others}"]
        if not self.passed_at_model_level():
            lines.append("whole model (what the failing layer does to the gradients of the weights below it): " +
                         model.removeprefix(f"{self.data['model']}: ").replace("\n", "\n  "))
        return "\n".join(lines)

    def passed_at_model_level(self) -> bool:
        return bool(self.data["three_way"]["passed"] and self.data["directional"]["passed"])

    def _model_failure_message(self) -> str:
        failed = self.failures()
        error = self.data["three_way"]["manual"].get("error")
        if error:
            more = f"; also {len(failed)} failed comparison(s), worst: {failed[0]['tensor']}" if failed else ""
            return f"{self.data['model']}: gradient check FAILED: manual: {error}{more}"
        if not failed:
            return f"{self.data['model']}: gradients agree"
        worst = failed[0]
        a, b = worst.get("worst_values") or (float("nan"), float("nan"))
        first, second = worst["methods"].split("_vs_")
        lines = [f"{self.data['model']}: gradient check FAILED ({len(failed)} comparison(s)); worst: "
                 f"{worst['tensor']}, {first} vs {second.replace('_', ' ')}, "
                 f"entry {tuple(worst.get('worst_entry') or ())}: "
                 f"{a!r} vs {b!r}, |difference| {abs(a - b):.3g} > tolerance {worst.get('worst_tolerance', 0):.3g} "
                 f"({worst['worst_over_tolerance']:.3g}× the tolerance)"]
        lines += [f"  also: {c['tensor']} {c['methods']} ({c['worst_over_tolerance']:.3g}× the tolerance)"
                  for c in failed[1:6]]
        lines += [f"  why: {finding}" for finding in self.data.get("autodiff_not_the_derivative", [])]
        return "\n".join(lines)


def format_table(report: dict) -> str:
    """One row per weight tensor: the book's measure (mean |diff| of backprop and numerical gradients), the
    largest absolute difference of each method pair, and the margin: the worst entry's |a − b| over its
    tolerance (PASS below 1; the same number gradcheck.png draws)."""
    three_way = report["three_way"]
    by_tensor: dict[str, dict] = {}
    for c in three_way["comparisons"]:
        by_tensor.setdefault(c["tensor"], {})[c["methods"]] = c
    header = ("tensor", "entries", "FD entries", "mean |diff| vs FD", "max |diff| manual~tape", "manual~FD",
              "tape~FD", "worst/tolerance", "FD kinks", "verdict")
    rows = []
    for name, pairs in by_tensor.items():
        fd = pairs.get("tape_vs_finite_differences")  # None: its layer's own check covers it (layers=True)
        backprop_vs_fd = pairs.get("manual_vs_finite_differences", fd)  # the book's: backprop vs numerical
        entries = pairs.get("manual_vs_tape", {}).get("entries", "")
        rows.append((name, str(entries), str(fd["entries"]) if fd else "layer",
                     f"{backprop_vs_fd['mean_abs_diff']:.1e}" if fd else "—",
                     *(f"{pairs[m]['max_abs_error']:.1e}" if m in pairs else "—" for m in METHOD_PAIRS),
                     f"{max(p['worst_over_tolerance'] for p in pairs.values()):.1e}", str(fd["kinks"]) if fd else "—",
                     "PASS" if all(p["passed"] for p in pairs.values()) else "FAIL"))
    batch = report["batch"]
    described = f" ({batch['description']})" if batch.get("description") else ""
    mode = "training mode" if three_way.get("training") else "inference mode"
    penalties = f" + model.losses ({', '.join(three_way['penalties'])})" if three_way.get("penalties") else ""
    backend = f" on {report['backend']} (tape: {report['reverse_mode']})" if "backend" in report else ""
    lines = [f"{report['model']} ({report['parameters']:,} parameters){backend}, {three_way['dtype']}, {mode}, "
             f"batch of {batch['size']}{described}, loss {' + '.join(three_way.get('losses', []))}{penalties}.",
             "FD: float64 central differences on sampled entries. mean |diff| vs FD: the book's measure, manual "
             "(else tape) against FD. PASS: every entry has |a − b| <= atol + rtol·max(|a|, |b|) "
             "(gradcheck/methods.py), so worst/tolerance < 1; 1/(worst/tolerance) is the margin."]
    if report.get("cast_in_place"):
        lines.append(f"float64 in place: no float64 copy of this model can be made ({report['cast_in_place']}), so "
                     "its own layers and variables were cast to float64 for the check and restored after.")
    if three_way["dtype"] != "float64":
        lines.append(f"{three_way['dtype']}: manual and tape are computed in {three_way['dtype']} and judged with "
                     f"{three_way['dtype']} tolerances; the directional check below always runs in float64, so it "
                     "can pass with far smaller errors than the rows above.")
    if three_way["manual"].get("error"):
        lines.append(f"manual: FAILED — {three_way['manual']['error']}; tape, finite differences and forward mode "
                     "ran without it")
    elif not three_way["manual"]["available"]:
        lines.append("manual: not available — " + "; ".join(three_way["manual"]["missing"]))
    lines += layer_table(report.get("layers") or {})
    if rows:
        lines += ["", "Whole model, per weight tensor (FD entries \"layer\": its entries are checked by its layer's "
                  "own check above, at a layer's cost):", files.text_table(header, rows)]
    d = report["directional"]
    checks = ", ".join(f"{k} {v['max_rel_error']:.1e} (worst/tolerance {v['worst_over_tolerance']:.1e})"
                       for k, v in d["checks"].items())
    kinks = sum(row["kink"] for row in d["directions"])
    on_kinks = f"; {kinks} on a kink, not counted" if kinks else ""
    forward = d.get("forward_mode", {"available": True})
    if not forward["available"]:
        lines += ["", f"forward mode: not available ({forward['reason']}); the directional check compares tape "
                  "and finite differences"]
    lines += ["", f"directional check (float64) over all {d['parameters']:,} parameters, {len(d['directions'])} "
              f"random directions; max relative error: {checks}{on_kinks}: {'PASS' if d['passed'] else 'FAIL'} "
              f"in {d['seconds']} s"]
    if d.get("below_float64"):
        lines.append(f"precision: forward and reverse mode, two exact derivatives of one function, differ by "
                     f"{d['checks']['jvp_vs_tape']['max_rel_error']:.1e} relative, above float64 rounding (~1e-15) "
                     "and within float32's: part of the model most likely computes below float64, and finite "
                     "differences then meet its rounding as noise; else a custom gradient is slightly wrong. Such a "
                     "model cannot be checked to float64 tolerances.")
    if report.get("below_float64"):
        lines.append(f"float32 inside: on {report['backend']} these parts compute in float32 even in a float64 model: "
                     f"{'; '.join(report['below_float64'])}. Their rounding (~1e-7) can fail float64 tolerances by "
                     "itself: check the model on TensorFlow or PyTorch (same weights and formulas), or with the "
                     "attention's dropout above 0 (Keras then computes the softmax itself).")
    crossed = report.get("kinks_crossed") or {}
    if crossed:
        named = "; ".join(f"{layer} ({c['entries']} entr{'y' if c['entries'] == 1 else 'ies'}; its input nearest a "
                          f"kink ({', '.join(f'{k:g}' for k in c['kinks'])}) is {c['nearest']:.1e} from it)"
                          for layer, c in list(crossed.items())[:5])
        more = f"; and {len(crossed) - 5} more layers" if len(crossed) > 5 else ""
        lines.append(f"kinks: finite differences cannot measure some sampled entries here, since even their smallest "
                     f"step moves inputs of a piecewise activation across its kink: {named}{more}. Those entries "
                     "are not counted; manual, tape and forward mode still check each other there. Activations "
                     "collapsed onto kinks are common at a deep network's initial weights in inference mode: check "
                     "at trained or randomised weights (biases and β off 0) to measure them.")
    for finding in report.get("autodiff_not_the_derivative", []):
        lines.append(f"tape: {finding}.")
    cost = report.get("cost") or {}
    if "passes" in cost:
        lines.append(f"cost: {cost['seconds']} s, {cost['passes']} forward+backward passes of the model (one took "
                     f"{cost['forward_backward_seconds']} s in float64 here)")
    first = (report.get("layers") or {}).get("first_failure")
    lines.append(f"verdict: {'PASS' if report['passed'] else 'FAIL'}" + (f" — first failing layer: {first}"
                                                                        if first else ""))
    return "\n".join(lines)


LAYER_ROWS_SHOWN = 30  # a longer model's table shows its failing layers and its worst passing ones


def layer_table(layers: dict) -> list[str]:
    """The layer-by-layer rows (layer_check.py): verdict, worst/tolerance, kinks and the methods that ran."""
    if not layers.get("available"):
        return ["", f"layer by layer: not run ({layers['reason']}); per tensor below"] if layers.get("reason") else []
    calls = [row for row in layers["calls"] if row["checked"]]
    shown = calls
    if len(calls) > LAYER_ROWS_SHOWN:
        worst = sorted((r for r in calls if r["passed"]), key=lambda r: -r["worst_over_tolerance"])
        keep = {id(r) for r in [r for r in calls if not r["passed"]] + worst[:LAYER_ROWS_SHOWN // 2]}
        shown = [r for r in calls if id(r) in keep]
    rows = [(r["layer"], r["class"], ", ".join(METHOD_NAMES[m] for m in r["methods"]), r["manual"].split(" (")[0],
             f"{r['worst_over_tolerance']:.1e}", str(r["kinks"]), "PASS" if r["passed"] else "FAIL") for r in shown]
    more = f" ({len(calls) - len(shown)} more layers pass, each below its tolerance; the JSON has every row)" \
        if len(shown) < len(calls) else ""
    lines = ["", f"Layer by layer: {len(calls)} layer calls, each alone at the activations of this batch: its "
             "vector-Jacobian product by the tape against central differences of its own forward and forward mode "
             f"(a random direction per input and weight, and {layers['entries']} sampled entries of each), and "
             f"against its manual formula where it has one; in topological order{more}.",
             files.text_table(("layer", "class", "methods vs tape", "manual", "worst/tolerance", "FD kinks",
                                   "verdict"), rows)]
    if layers.get("first_failure"):
        lines.append(f"first failing layer: {layers['first_failure']}")
    return lines


METHOD_NAMES = {"tape_vs_finite_differences": "FD", "jvp_vs_tape": "forward mode", "manual_vs_tape": "manual"}


def plot_errors(report: dict, path: Path) -> None:
    """What the console table's worst/tolerance column says, per tensor and method pair, and the directional
    check over all parameters beside it: log scale, PASS below the red line at 1."""
    import matplotlib.pyplot as plt

    comparisons = report["three_way"]["comparisons"]
    tensors = list(dict.fromkeys(c["tensor"] for c in comparisons))
    pairs = [m for m in METHOD_PAIRS if any(c["methods"] == m for c in comparisons)]
    directional = report["directional"]["checks"]
    layers = [row for row in (report.get("layers") or {}).get("calls", []) if row["checked"]]
    width_in = min(max(6, 1.1 * len(tensors) + 2) + 3, 24)
    if layers:
        figure = plt.figure(figsize=(width_in, 9), dpi=100, layout="constrained")
        top, bottom = figure.subfigures(2, 1)
        _plot_layers(top.subplots(), layers, report)
        axes, side = bottom.subplots(1, 2, gridspec_kw={"width_ratios": [max(3, len(tensors)), 2]}, sharey=True)
    else:
        figure, (axes, side) = plt.subplots(1, 2, figsize=(width_in, 4.5), dpi=100,
                                            gridspec_kw={"width_ratios": [max(3, len(tensors)), 2]}, sharey=True)
    if not pairs:  # no formula, and every tensor's entries checked in its layer: nothing per tensor to draw
        axes.text(0.5, 0.5, "no per-tensor comparisons:\nno manual formula for every layer, and every tensor's\n"
                  "entries checked against finite differences in its layer (above)", ha="center", va="center",
                  transform=axes.transAxes, fontsize=9)
    width = 0.8 / max(len(pairs), 1)
    for k, methods in enumerate(pairs):
        ratios = [next((c["worst_over_tolerance"] for c in comparisons if c["tensor"] == t and c["methods"] == methods),
                       0.0) for t in tensors]
        axes.bar(np.arange(len(tensors)) + (k - (len(pairs) - 1) / 2) * width, np.maximum(ratios, 1e-12), width,
                 label=methods, color=PAIR_COLORS[methods])
    names = list(directional)
    side.bar(np.arange(len(names)), [max(directional[n]["worst_over_tolerance"], 1e-12) for n in names],
             0.6, color=[PAIR_COLORS.get(n, "tab:purple") for n in names])
    for each in (axes, side):
        each.axhline(1.0, color="red", linestyle="--", linewidth=1, label="tolerance (PASS below)")
        each.grid(alpha=0.3, axis="y")
    axes.set(yscale="log", ylabel="worst |a − b| / tolerance (the table's worst/tolerance)",
             title=f"{report['model']}: per tensor ({report['three_way']['dtype']})")
    axes.set_xticks(np.arange(len(tensors)), tensors, rotation=30, ha="right")
    axes.legend(fontsize=7)
    side.set_xticks(np.arange(len(names)), [n.replace("_vs_", " vs\n").replace("_", " ") for n in names],
                    fontsize=8)
    side.set_title(f"directional, all {report['directional']['parameters']:,}\nparameters (float64)", fontsize=10)
    if len(tensors) > 40:  # an ImageNet model's hundreds of tensors: the bars tell, the names would overprint
        axes.set_xticks([])
    files.save_figure(figure, path, tight=not layers)


def _plot_layers(axes, layers: list[dict], report: dict) -> None:
    """Each layer call's worst |a − b| / tolerance over its own checks, in topological order; failing ones red."""
    ratios = [max(row["worst_over_tolerance"], 1e-12) for row in layers]
    axes.bar(np.arange(len(layers)), ratios, 0.8, color=["tab:red" if not row["passed"] else "tab:green"
                                                         for row in layers])
    axes.axhline(1.0, color="red", linestyle="--", linewidth=1, label="tolerance (PASS below)")
    axes.set(yscale="log", ylabel="worst |a − b| / tolerance", xlabel="layer calls, inputs first",
             title=f"{report['model']}: layer by layer ({len(layers)} layer calls, each checked alone)")
    named = range(len(layers)) if len(layers) <= 40 else [k for k, row in enumerate(layers) if not row["passed"]]
    axes.set_xticks(list(named), [layers[k]["layer"] for k in named], rotation=30, ha="right", fontsize=7)
    axes.grid(alpha=0.3, axis="y")
    axes.legend(fontsize=7)


PAIR_COLORS = {"manual_vs_tape": "tab:blue", "manual_vs_finite_differences": "tab:orange",
               "tape_vs_finite_differences": "tab:green", "jvp_vs_tape": "tab:purple"}
GRADCHECK_CAPTION = ("What to look for: every bar below the red line (each entry within its tolerance); the "
                     "manual-vs-tape bars far lower than the finite-difference ones, since two exact derivatives "
                     "differ only by rounding.")
