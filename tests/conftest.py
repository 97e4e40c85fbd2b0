import gzip
import shutil
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from backprop_suite.experiment import load_spec

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_CLAIMS_FILE = REPO_ROOT.parent / "shared" / "CLAIMS.md"  # the original of experiments/CLAIMS.md


def tiered(cases, *, everyday=None, long=()) -> list:
    """Parametrize `cases` (names, or a dict's keys) for the two tiers: those in `long`, and those not in `everyday`
    where it is given, are marked full (scripts/test.sh --all runs them; the everyday tier leaves them out)."""
    names = list(cases)
    unknown = (set(everyday or ()) | set(long)) - set(names)
    assert not unknown, f"not among the cases: {sorted(map(str, unknown))}"
    is_long = {name: name in long or (everyday is not None and name not in everyday) for name in names}
    return [pytest.param(name, marks=pytest.mark.full) if is_long[name] else name for name in names]


def pytest_addoption(parser):
    parser.addoption("--all", action="store_true", dest="all_tiers",
                     help="run every test, the tests marked full too (about 45 minutes on 2 cores); without it the "
                          "everyday tier runs (about 5 minutes)")


def pytest_collection_modifyitems(config, items):
    """Without --all, the tests marked full are deselected: the everyday tier. On JAX or PyTorch (KERAS_BACKEND),
    the tests marked any_backend run; the rest test TensorFlow's own paths (tf.distribute, tf.data, TensorFlow's
    logs, the reference results) and are skipped, saying so."""
    if not config.getoption("all_tiers"):
        deselected = [item for item in items if "full" in item.keywords]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = [item for item in items if "full" not in item.keywords]
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return
    skip = pytest.mark.skip(reason=f"TensorFlow's own path; on {backend} only the tests marked any_backend run")
    for item in items:
        if "any_backend" not in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def isolated_keras_home(tmp_path, monkeypatch):
    """Never read the user's Keras cache, never try to download: each test sees only its own files."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv("BACKPROP_SUITE_OFFLINE", "1")


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """An IDX file's bytes, built from the format description (not from the suite's reader)."""
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_folder(folder: Path, train: tuple, test: tuple, gzipped: bool = False) -> dict[str, Path]:
    """The four MNIST IDX files for (images, labels) pairs; returns their paths by role."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"train-images-idx3-ubyte": train[0], "train-labels-idx1-ubyte": train[1],
              "t10k-images-idx3-ubyte": test[0], "t10k-labels-idx1-ubyte": test[1]}
    paths = {}
    for name, array in arrays.items():
        data = idx_bytes(array)
        path = folder / (f"{name}.gz" if gzipped else name)
        path.write_bytes(gzip.compress(data) if gzipped else data)
        paths[name] = path
    return paths


def random_digits(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)


def tiny_spec(tmp_path, name="tiny", model='name = "two_layer_net"\nhidden_size = 32', epochs=3,
              optimizer="adam", learning_rate=0.01, batch_size=64):
    path = tmp_path / f"{name}.toml"
    path.write_text(f"""\
question = "Does a short run learn?"
claims = ["C002-1"]
profile = "quick"
[model]
{model}
[data]
dataset = "mnist-5k"
[training]
optimizer = "{optimizer}"
learning_rate = {learning_rate}
loss = "categorical_crossentropy"
batch_size = {batch_size}
epochs = {epochs}
seed = 7
[[expected]]
dataset = "mnist-5k"
metric = "test_accuracy"
at_least = 0.5
source = "chance is 0.1"
""")
    return load_spec(path)


def sine_layer_source(package: str) -> str:
    """A custom layer y = sin(x), registered under `package`, with the framework's gradient or, broken, one that
    says sin where cos belongs: the tests' layer and the "user's" module are this one text."""
    return textwrap.dedent(f"""
        import keras

        @keras.saving.register_keras_serializable(package="{package}")
        class Sine(keras.layers.Layer):
            def __init__(self, broken=False, **kwargs):
                super().__init__(**kwargs)
                self.broken = broken

            def call(self, x):
                if not self.broken:
                    return keras.ops.sin(x)

                @keras.ops.custom_gradient
                def sine(v):
                    def grad(*args, upstream=None):
                        upstream = args[0] if upstream is None else upstream
                        return upstream * keras.ops.sin(v)  # should be cos(v)
                    return keras.ops.sin(v), grad

                return sine(x)

            def get_config(self):
                return {{**super().get_config(), "broken": self.broken}}
        """)


def wheel_of(project: Path, out: Path) -> Path:
    """The wheel pip builds from a copy of `project` (a build/ folder left in the work tree by an earlier build
    would add files the project no longer has)."""
    source = out / "source"
    shutil.copytree(project, source, ignore=shutil.ignore_patterns("build", ".venv", "results", ".git", "*.egg-info",
                                                                    "__pycache__", ".pytest_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(source)], check=True, capture_output=True, timeout=300)
    [wheel] = out.glob("*.whl")
    return wheel


def run_child(command, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run whose time limit is a safety net against a hang, set far above the child's usual time: when it
    is hit, the test fails saying so, with how long the child ran, not with a TimeoutExpired traceback."""
    start = time.monotonic()
    try:
        return subprocess.run(command, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired:
        shown = " ".join(Path(str(part)).name if i < 2 else str(part) for i, part in enumerate(command))
        pytest.fail(f"`{shown}` was still running after {time.monotonic() - start:.0f} s and was stopped at its "
                    f"safety limit of {timeout:.0f} s, far above its usual time: it hangs, or this machine is much "
                    "slower or busier than usual; run this test alone to tell which", pytrace=False)
