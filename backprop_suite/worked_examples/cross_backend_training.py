"""One training spec, trained by train.py on each Keras backend: do TensorFlow, JAX and PyTorch all learn it?

Each backend draws its own initial weights and dropout masks (Keras's seeded initialisers use the backend's
random generator), so the curves are not identical; the spec's own expectations are what each run must meet.
"""
import csv
import functools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from backprop_suite import artifacts
from backprop_suite.cli import BACKENDS, DEFAULT_BACKEND
from gradcheck.errors import InputError

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train.py"
COLORS = {"tensorflow": "tab:blue", "jax": "tab:purple", "torch": "tab:orange"}


def cross_backend_training(experiment: str = "c003_1_mnist_cnn_quick", backends: tuple = BACKENDS):
    """train.py `experiment` (a name in experiments/ or a spec path) once per backend; each run's test accuracy
    and time, and the curves side by side."""
    from backprop_suite.worked_examples.result import WorkedResult

    runs = {}
    with tempfile.TemporaryDirectory() as folder:
        for backend in backends:
            runs[backend] = _train(experiment, backend, Path(folder))
    metrics = {f"{b}_test_accuracy": run["record"]["metrics"]["test_accuracy"] for b, run in runs.items()}
    metrics |= {f"{b}_seconds": round(run["record"]["wall_time_s"], 1) for b, run in runs.items()}
    metrics["min_test_accuracy"] = min(metrics[f"{b}_test_accuracy"] for b in backends)
    lines = [f"{experiment} trained by train.py on each backend (its own initial weights and dropout masks):"]
    lines += [f"  {b:10}  test accuracy {run['record']['metrics']['test_accuracy']:.4f}, test loss "
              f"{run['record']['metrics']['test_loss']:.4f}, {run['record']['wall_time_s']:.0f} s "
              f"(Keras {run['record']['environment']['keras']} on {b} {run['record']['environment'].get(b, '?')})"
              for b, run in runs.items()]
    histories = {b: run["history"] for b, run in runs.items()}
    reference = runs[backends[0]]["record"]
    return WorkedResult(metrics, "\n".join(lines),
                        {"curves_by_backend.png": functools.partial(plot_curves, histories, experiment)},
                        data=reference["data"], details={b: run["record"]["metrics"] for b, run in runs.items()},
                        captions={"curves_by_backend.png": CAPTION})


def _train(experiment: str, backend: str, results: Path) -> dict:
    env = {**os.environ, "KERAS_BACKEND": backend}
    done = subprocess.run([sys.executable, str(SCRIPT), experiment, "--backend", backend, "--results-dir",
                           str(results)], env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode not in (0, 1):  # 1: a verdict of "failed", which the metrics below show
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
        raise InputError(f"train.py {experiment} --backend {backend} failed (exit {done.returncode}):\n{tail}")
    name = Path(experiment).stem  # a name in experiments/ or a spec file's path: results go by the file's stem
    folder = results / (name if backend == DEFAULT_BACKEND else f"{name}+backend={backend}")
    with open(folder / "history.csv", newline="") as file:
        history = [{key: float(value) for key, value in row.items()} for row in csv.DictReader(file)]
    return {"record": json.loads((folder / "metrics.json").read_text()), "history": history}


def plot_curves(histories: dict, experiment: str, path) -> None:
    import matplotlib.pyplot as plt

    figure, panels = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100)
    for backend, history in histories.items():
        epochs = [row["epoch"] for row in history]
        for axes, metric in zip(panels, ("accuracy", "loss"), strict=True):
            axes.plot(epochs, [row[metric] for row in history], "--", color=COLORS.get(backend), alpha=0.7,
                      label=f"{backend} training")
            axes.plot(epochs, [row[f"val_{metric}"] for row in history], "-o", markersize=3,
                      color=COLORS.get(backend), label=f"{backend} validation")
    for axes, metric in zip(panels, ("accuracy", "loss"), strict=True):
        axes.set(xlabel="epoch", ylabel=metric, title=f"{metric} by backend")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    figure.suptitle(f"{experiment}: the same spec trained on each Keras backend")
    artifacts.save_figure(figure, path)


CAPTION = ("What to look for: the three backends' curves close together and learning at the same pace (each draws "
           "its own initial weights, so they do not coincide).")
