"""What a check ran on: library versions, the backend, the machine (CPU model and speed flags, memory, GPUs)."""
import functools
import os
import platform
import sys
from pathlib import Path


def environment() -> dict:
    import keras
    import numpy

    from gradcheck import autodiff, backends

    accelerators = autodiff.devices()
    return {
        "python": platform.python_version(),
        "keras_backend": autodiff.BACKEND,
        **{package: _version(package) for package in backends.BACKENDS if _version(package)},
        "keras": keras.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        **cpu(),
        "memory_gib": _memory_gib(),
        "gpus": len(accelerators),
        "accelerators": accelerators,
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
