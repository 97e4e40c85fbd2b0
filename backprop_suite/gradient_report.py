"""A gradient check's report: the per-tensor table (str), JSON, a plot, and the message assert_gradients raises."""
import json
from pathlib import Path

import numpy as np

from backprop_suite import artifacts

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
        artifacts.write_json(paths[0], self.data)
        self.plot(paths[1])
        return paths

    def failures(self) -> list[dict]:
        """Every failed comparison: per tensor, worst first (they name an entry), then the directional checks."""
        def worst_first(comparisons):
            return sorted((c for c in comparisons if not c["passed"]), key=lambda c: -c["worst_over_tolerance"])

        directional = [{**c, "tensor": f"all parameters, directional ({key})"}
                       for key, c in self.data["directional"]["checks"].items()]
        return worst_first(self.data["three_way"]["comparisons"]) + worst_first(directional)

    def failure_message(self) -> str:
        failed = self.failures()
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
        return "\n".join(lines)


def format_table(report: dict) -> str:
    """One row per weight tensor: max relative error of each method pair, kinks, verdict."""
    three_way = report["three_way"]
    by_tensor: dict[str, dict] = {}
    for c in three_way["comparisons"]:
        by_tensor.setdefault(c["tensor"], {})[c["methods"]] = c
    header = ("tensor", "entries", "FD entries", "manual~tape", "manual~FD", "tape~FD", "FD kinks", "verdict")
    rows = []
    for name, pairs in by_tensor.items():
        fd = pairs["tape_vs_finite_differences"]
        entries = pairs.get("manual_vs_tape", {}).get("entries", "")
        rows.append((name, str(entries), str(fd["entries"]),
                     *(f"{pairs[m]['max_rel_error']:.1e}" if m in pairs else "—" for m in METHOD_PAIRS),
                     str(fd["kinks"]), "PASS" if all(p["passed"] for p in pairs.values()) else "FAIL"))
    batch = report["batch"]
    described = f" ({batch['description']})" if batch.get("description") else ""
    mode = "training mode" if three_way.get("training") else "inference mode"
    lines = [f"{report['model']} ({report['parameters']:,} parameters), {three_way['dtype']}, {mode}, batch of "
             f"{batch['size']}{described}, loss {' + '.join(three_way.get('losses', []))}; max relative error "
             "per method pair (FD: float64 central differences on sampled entries).", "PASS: every entry has "
             "|a − b| <= atol + rtol·max(|a|, |b|), tolerances as documented in backprop_suite/gradcheck.py"]
    if not three_way["manual"]["available"]:
        lines.append("manual: not available — " + "; ".join(three_way["manual"]["missing"]))
    lines += ["", artifacts.text_table(header, rows)]
    d = report["directional"]
    checks = ", ".join(f"{k} {v['max_rel_error']:.1e}" for k, v in d["checks"].items())
    kinks = sum(row["kink"] for row in d["directions"])
    on_kinks = f"; {kinks} on a kink, not counted" if kinks else ""
    lines += ["", f"directional check over all {d['parameters']:,} parameters, {len(d['directions'])} random "
              f"directions (max relative error: {checks}{on_kinks}): {'PASS' if d['passed'] else 'FAIL'} in "
              f"{d['seconds']} s",
              f"verdict: {'PASS' if report['passed'] else 'FAIL'}"]
    return "\n".join(lines)


def plot_errors(report: dict, path: Path) -> None:
    """Per tensor and method pair, the worst error as a fraction of its tolerance (log scale): PASS below 1."""
    import matplotlib.pyplot as plt

    comparisons = report["three_way"]["comparisons"]
    tensors = list(dict.fromkeys(c["tensor"] for c in comparisons))
    pairs = [m for m in METHOD_PAIRS if any(c["methods"] == m for c in comparisons)]
    figure, axes = plt.subplots(figsize=(max(6, 1.1 * len(tensors) + 2), 4.5), dpi=100)
    width = 0.8 / len(pairs)
    for k, methods in enumerate(pairs):
        ratios = [next(c["worst_over_tolerance"] for c in comparisons if c["tensor"] == t and c["methods"] == methods)
                  for t in tensors]
        axes.bar(np.arange(len(tensors)) + (k - (len(pairs) - 1) / 2) * width, np.maximum(ratios, 1e-12), width,
                 label=methods)
    axes.axhline(1.0, color="red", linestyle="--", linewidth=1, label="tolerance (PASS below)")
    axes.set(yscale="log", ylabel="worst |a − b| / (atol + rtol·max(|a|, |b|))",
             title=f"{report['model']}: gradient agreement ({report['three_way']['dtype']})")
    axes.set_xticks(np.arange(len(tensors)), tensors, rotation=30, ha="right")
    axes.legend(fontsize=7)
    artifacts.save_figure(figure, path)
