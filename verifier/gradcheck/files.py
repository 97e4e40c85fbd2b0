"""Files written atomically: a reader sees the old file or the new one, never half. A full disk or a place that is
not writable is an InputError naming the file and the remedy, not a traceback."""
import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path

from gradcheck.errors import InputError

TEMPORARY_PREFIX = ".tmp-"  # a file being written; one left behind by a killed writer is removed by the next
_UMASK = os.umask(0o022)
os.umask(_UMASK)


# What a write can meet that the user, not the suite, must fix: a full disk or quota, a read-only place.
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


class WriteError(InputError):
    """A file could not be written: the disk is full, or the place is not writable."""


def write_error(path: Path, error: OSError, remedy: str = "") -> WriteError | OSError:
    """The one-line error for an OSError met while writing `path` (the error itself when it is not the user's
    to fix): what happened, the space left where it is the disk, and the remedy."""
    path = Path(path)
    if error.errno in _FULL:
        try:
            free = shutil.disk_usage(_existing_ancestor(path)).free
            left = f", {free / 2**20:.1f} MiB left there"
        except OSError:
            left = ""
        return WriteError(f"{path}: cannot write it, the disk is full ({error.strerror}{left}); free some space "
                          f"(df -h {_existing_ancestor(path)}) and run the same command again{remedy}")
    if error.errno in _NOT_WRITABLE:
        return WriteError(f"{path}: cannot write it ({error.strerror}); make {_existing_ancestor(path)} writable, "
                          f"or write elsewhere{remedy}")
    return error


def _existing_ancestor(path: Path) -> Path:
    for folder in (path, *path.parents):
        if folder.exists():
            return folder
    return Path("/")


@contextlib.contextmanager
def translated_write_errors(path: Path, remedy: str = ""):
    """Within the block, a full disk or an unwritable place is a WriteError naming `path` (see write_error)."""
    try:
        yield
    except OSError as error:
        raise write_error(path, error, remedy) from None


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside `path` (same suffix); move it into place if the block succeeds. A full
    disk or an unwritable folder is a WriteError naming `path`; the old file is then untouched."""
    path = Path(path)
    with translated_write_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        # Some writers require the suffix (Keras's `.weights.h5`, matplotlib's format from `.png`).
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TEMPORARY_PREFIX}{path.name}.",
                                   suffix="".join(path.suffixes))
        os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; results are meant to be shared
    try:
        with translated_write_errors(path):
            yield Path(tmp)
            with open(tmp, "rb+") as stream:
                os.fsync(stream.fileno())
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def text_table(header: tuple, rows: list[tuple]) -> str:
    """Left-aligned columns under a header and a dashed rule, for terminal output."""
    cells = [tuple(str(cell) for cell in row) for row in (header, *rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def save_figure(figure, path: Path, tight: bool = True) -> None:
    """Write a matplotlib figure atomically (format from the suffix) and free it."""
    import matplotlib.pyplot as plt

    if tight:
        figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp)
    plt.close(figure)
