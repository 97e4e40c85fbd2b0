"""What a result was made with: library versions, machine, code revision, and a checksum of the code."""
import functools
import hashlib
import os
import platform
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# Modules that present results, schedule runs or benchmark, but never change what an experiment measures;
# a change to them must not make every stored result out of date. (distribute.py is not among them: a
# multi-worker run's results depend on its training loop.)
NOT_EXPERIMENT_CODE = ("backprop_suite/report.py", "backprop_suite/reproduce.py", "backprop_suite/bench.py",
                       "backprop_suite/op_profile.py")


def environment() -> dict:
    import keras
    import numpy

    from backprop_suite import autodiff

    accelerators = autodiff.devices()
    return {
        "python": platform.python_version(),
        "keras_backend": autodiff.BACKEND,
        **{package: _version(package) for package in ("tensorflow", "jax", "torch") if _version(package)},
        "keras": keras.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        **cpu(),
        "memory_gib": _memory_gib(),
        "gpus": len(accelerators),
        "accelerators": accelerators,
        "code_revision": CODE_REVISION,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


def _version(package: str) -> str | None:
    """An installed package's version, without importing it (None: not installed)."""
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")


@functools.lru_cache(maxsize=1)
def cpu() -> dict:
    """The CPU's model name and the instruction-set flags that decide its speed here (Linux /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            fields = dict(line.split(":", 1) for line in cpuinfo.read().splitlines() if ":" in line)
    except OSError:
        return {"cpu_model": platform.processor() or None, "cpu_flags": []}
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    flags = set(fields.get("flags", "").split())
    return {"cpu_model": fields.get("model name"), "cpu_flags": [f for f in SPEED_FLAGS if f in flags]}


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


@functools.cache
def code_sha256() -> str:
    """SHA-256 over the code that computes results (models/, backprop_suite/ but NOT_EXPERIMENT_CODE) and the
    pinned requirements: a result whose stored checksum differs was made by other code."""
    files = sorted(path for folder in ("models", "backprop_suite") for path in (REPO_ROOT / folder).rglob("*.py")
                   if path.relative_to(REPO_ROOT).as_posix() not in NOT_EXPERIMENT_CODE)
    digest = hashlib.sha256()
    for path in [*files, REPO_ROOT / "requirements.txt"]:
        content = path.read_bytes()
        digest.update(f"{path.relative_to(REPO_ROOT).as_posix()} {len(content)}\n".encode())
        digest.update(content)
    return digest.hexdigest()
