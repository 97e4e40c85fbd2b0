"""Result files, each written atomically: a reader sees the old file or the new one, never half."""
import contextlib
import csv
import ctypes
import errno
import fcntl
import io
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402

from gradcheck.errors import InputError  # noqa: E402

# The verifier's atomic writes, which the suite's result folders build on.
from gradcheck.files import (  # noqa: E402, F401
    _UMASK,
    TEMPORARY_PREFIX,
    WriteError,
    _existing_ancestor,
    atomic_path,
    save_figure,
    text_table,
    translated_write_errors,
    write_error,
    write_json,
    write_text,
)

HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy")


# ---- a result folder, replaced whole ------------------------------------------------------------------------
# A run writes its files into a staging folder beside the result folder, then the two are exchanged in one
# step (renameat2's RENAME_EXCHANGE), so a reader, or a run killed at any moment, finds the old result or the
# new one, never a mix. The writer's lock files (hard links, the same inodes) and state folders travel with it.

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def staging_folder(out_dir: Path) -> Path:
    """Where the next result of `out_dir` is written before it is swapped in (one writer per folder: the lock)."""
    out_dir = Path(out_dir)
    return out_dir.parent / f".{out_dir.name}.staging"


def _retired_folder(out_dir: Path) -> Path:
    return out_dir.parent / f".{out_dir.name}.retired"


def begin_staging(out_dir: Path) -> Path:
    """An empty staging folder for `out_dir`'s next result (a killed writer's leftover is removed)."""
    staging = staging_folder(out_dir)
    shutil.rmtree(staging, ignore_errors=True)
    with translated_write_errors(staging):
        staging.mkdir(parents=True)
    return staging


def publish(staging: Path, out_dir: Path) -> None:
    """Swap the complete result in `staging` for the one in `out_dir`, at once; then remove the old one."""
    staging, out_dir = Path(staging), Path(out_dir)
    with translated_write_errors(out_dir):
        for entry in out_dir.iterdir():  # the writers' locks and resume states are not the result: they stay
            if entry.name.startswith(".") and not entry.name.startswith(TEMPORARY_PREFIX):
                with contextlib.suppress(FileNotFoundError):  # another worker may just have removed its state
                    if entry.is_file():
                        os.link(entry, staging / entry.name)
                    else:
                        os.replace(entry, staging / entry.name)
        if not _exchange(staging, out_dir):  # a file system without RENAME_EXCHANGE: two renames
            retired = _retired_folder(out_dir)
            shutil.rmtree(retired, ignore_errors=True)
            os.replace(out_dir, retired)
            os.replace(staging, out_dir)  # recover_publish() ends this, should a kill fall between the two
            staging = retired
    shutil.rmtree(staging, ignore_errors=True)


def recover_publish(out_dir: Path) -> None:
    """Finish a swap that a kill interrupted between its two renames (only on file systems without an
    exchange): the result folder is missing and its complete replacement waits in the staging folder."""
    out_dir = Path(out_dir)
    if not out_dir.exists() and _retired_folder(out_dir).exists() and staging_folder(out_dir).exists():
        os.replace(staging_folder(out_dir), out_dir)
        shutil.rmtree(_retired_folder(out_dir), ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths (Linux renameat2); False where the system or file system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


@contextlib.contextmanager
def sole_writer(folder: Path, lock_name: str = ".lock"):
    """Hold an exclusive lock on `folder` while writing it: a second writer gets an InputError naming the first.

    flock(2) is released by the kernel when its holder dies, so a lock left by a killed run is simply taken
    over. Holding it, the temporary files a killed writer left in the folder are removed.
    """
    folder = Path(folder)
    recover_publish(folder)
    with translated_write_errors(folder):
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / lock_name, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 300).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise InputError(f"{folder}: {holder} is writing these results; wait for it to finish (or stop it), "
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
    """Write a probe file in `folder` (making it and its missing parents for the probe, and removing what the
    probe made): an InputError naming it (and `option`, the way to choose another) now, before any work,
    instead of a traceback after an epoch of training. Processes that probe one new folder at once (the workers of
    a cluster, started together) do not fail each other: a folder another one made is used, and a probe whose
    folder another one removed again is tried again."""
    folder = Path(folder)
    for attempt in range(PROBE_ATTEMPTS):
        try:
            _probe(folder)
            return
        except FileNotFoundError as error:  # another process removed the folder it had made for its own probe
            if attempt + 1 < PROBE_ATTEMPTS:
                continue
            failure = error
        except OSError as error:
            failure = error
        raise InputError(f"{folder}: cannot write results there ({failure.strerror or failure}); "
                         f"choose a writable folder with {option}") from None


PROBE_ATTEMPTS = 5


def _probe(folder: Path) -> None:
    made = []
    try:
        for missing in reversed([f for f in (folder, *folder.parents) if not f.exists()]):
            try:
                missing.mkdir()
            except FileExistsError:  # made by another process at the same moment: not ours to remove
                continue
            made.append(missing)
        if not folder.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "it is a file, not a folder")
        with tempfile.TemporaryFile(dir=folder):
            pass
    finally:
        for created in reversed(made):
            with contextlib.suppress(OSError):
                created.rmdir()


def require_writable_file(path: Path, option: str) -> None:
    """`path` can be written as a file: not a folder, and its folder writable (require_writable_folder)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{option} {path}: it is a folder; give a file name")
    require_writable_folder(path.parent, option)


@contextlib.contextmanager
def result_folder(folder: Path):
    """The block writes into `folder`; if the block fails and leaves the folder holding only the writers' lock
    files it made (a refused run), the folder goes too."""
    folder = Path(folder)
    existed = folder.exists()
    try:
        yield folder
    except BaseException:
        if not existed and folder.is_dir() and all(e.name.startswith(".lock") for e in folder.iterdir()):
            shutil.rmtree(folder, ignore_errors=True)
        raise


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


def print_json(data: dict, also_to: Path | None = None) -> None:
    """A profile's output: the JSON on stdout and, given a path, in that file too (untouched if it holds it)."""
    text = json.dumps(data, indent=1)
    if also_to is not None:
        write_text_if_changed(also_to, text + "\n")
    print(text)


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
