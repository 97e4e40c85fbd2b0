"""Result files, each written atomically: a reader sees the old file or the new one, never half."""
import contextlib
import csv
import fcntl
import io
import json
import os
import socket
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402

from backprop_suite.errors import SuiteError  # noqa: E402

HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy")
TEMPORARY_PREFIX = ".tmp-"  # a file being written; one left behind by a killed writer is removed by the next
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside `path` (same suffix); move it into place if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Some writers require the suffix (Keras's `.weights.h5`, matplotlib's format from `.png`).
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TEMPORARY_PREFIX}{path.name}.", suffix="".join(path.suffixes))
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; results are meant to be shared
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def sole_writer(folder: Path, lock_name: str = ".lock"):
    """Hold an exclusive lock on `folder` while writing it: a second writer gets a SuiteError naming the first.

    flock(2) is released by the kernel when its holder dies, so a lock left by a killed run is simply taken
    over. Holding it, the temporary files a killed writer left in the folder are removed.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / lock_name, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 300).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise SuiteError(f"{folder}: {holder} is writing these results; wait for it to finish (or stop it), "
                         "then run again") from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()} on {socket.gethostname()} (since {time.strftime('%H:%M:%S')})".encode())
        for stale in folder.glob(f"{TEMPORARY_PREFIX}*"):
            stale.unlink(missing_ok=True)
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays (removing it would race with a writer about to lock it)


def require_writable_folder(folder: Path, option: str) -> None:
    """Create `folder` if needed and write a probe file in it: a SuiteError naming it (and `option`, the way
    to choose another) now, before any work, instead of a traceback after an epoch of training."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise SuiteError(f"{folder}: cannot write results there ({error.strerror or error}); "
                         f"choose a writable folder with {option}") from None


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_text_if_changed(path: Path, text: str) -> bool:
    """Write `text` unless the file already holds exactly it (a run that changes nothing leaves it untouched)."""
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    write_text(path, text)
    return True


def counted(number: int, noun: str) -> str:
    """'1 experiment', '17 experiments'."""
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def write_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def print_json(data: dict, also_to: Path | None = None) -> None:
    """A profile's output: the JSON on stdout and, given a path, in that file too (untouched if it holds it)."""
    text = json.dumps(data, indent=1)
    if also_to is not None:
        write_text_if_changed(also_to, text + "\n")
    print(text)


def text_table(header: tuple, rows: list[tuple]) -> str:
    """Left-aligned columns under a header and a dashed rule, for terminal output."""
    cells = [tuple(str(cell) for cell in row) for row in (header, *rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def write_history_csv(path: Path, rows: list[dict]) -> None:
    """One row per epoch with HISTORY_COLUMNS; floats at full precision so reruns compare exactly."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: (repr(row[key]) if isinstance(row[key], float) else row[key]) for key in HISTORY_COLUMNS}
                     for row in rows)
    write_text(path, buffer.getvalue())


def plot_curves(rows: list[dict], metric: str, path: Path, title: str, test_value: float | None = None) -> None:
    """Training and validation `metric` against epoch (1-based, as Keras prints it); the test set's value after
    the last epoch as a star with its number, when given."""
    epochs = [row["epoch"] for row in rows]
    figure, axes = plt.subplots(figsize=(6, 4), dpi=100)
    axes.plot(epochs, [row[metric] for row in rows], "o-", label=metric)
    axes.plot(epochs, [row[f"val_{metric}"] for row in rows], "s--", label=f"val_{metric}")
    if test_value is not None:
        axes.plot([epochs[-1]], [test_value], "*", color="crimson", markersize=14, label=f"test_{metric}")
        axes.annotate(f"test {test_value:.4f}", (epochs[-1], test_value), textcoords="offset points",
                      xytext=(-8, -16 if metric == "accuracy" else 10), ha="right", color="crimson")
    axes.set(title=title, xlabel="epoch", ylabel=metric)
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.grid(alpha=0.3)
    axes.legend()
    save_figure(figure, path)


def save_figure(figure, path: Path, tight: bool = True) -> None:
    """Write a matplotlib figure atomically (format from the suffix) and free it."""
    if tight:
        figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp)
    plt.close(figure)


def draw_model(model, out_dir: Path) -> str:
    """model.png from plot_model(show_shapes=True); without graphviz, model.dot. Always model_summary.txt."""
    import keras
    from keras.src.utils.model_visualization import check_graphviz

    lines = []
    model.summary(print_fn=lambda line, **_: lines.append(line), line_length=100)
    write_text(out_dir / "model_summary.txt", "\n".join(lines) + "\n")
    if check_graphviz():
        with atomic_path(out_dir / "model.png") as tmp:
            keras.utils.plot_model(model, to_file=str(tmp), show_shapes=True, show_layer_names=True)
        return "model.png"
    dot = keras.utils.model_to_dot(model, show_shapes=True, show_layer_names=True)
    write_text(out_dir / "model.dot", dot.to_string())
    print("[plot] graphviz's `dot` program not found: wrote model.dot and model_summary.txt instead of "
          "model.png; install graphviz (Debian/Ubuntu: apt-get install graphviz) for the picture", flush=True)
    return "model.dot"
