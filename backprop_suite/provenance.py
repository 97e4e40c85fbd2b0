"""What a result was made with: library versions, machine, code revision."""
import os
import platform
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def environment() -> dict:
    import keras
    import numpy
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "code_revision": CODE_REVISION,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as meminfo:
            kib = int(meminfo.readline().split()[1])
        return round(kib / 2**20, 1)
    except (OSError, ValueError, IndexError):
        return None


def _git_revision() -> str | None:
    try:
        revision = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
                                  capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        # Dirty means the code differs from the revision; results/ changes while results are made.
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no",
                                "--", ".", ":!results"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{revision}+dirty" if dirty else revision


# Read once, when the suite is imported: the revision of the code that is running, not of whatever
# the work tree holds when a long run ends.
CODE_REVISION = _git_revision()
