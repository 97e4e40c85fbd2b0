"""Reader for the IDX format of MNIST and Fashion-MNIST, gzipped or not, with strict checks.

IDX layout (big-endian): two zero bytes, a type code (0x08 = unsigned byte), the number of
dimensions, one uint32 per dimension, then the values in row-major order.
"""
import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from backprop_suite.errors import DataError

UNSIGNED_BYTE = 0x08
IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10


def read_file_bytes(path: Path) -> bytes:
    """The file's bytes, un-gzipped when its name ends in .gz."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    raw = path.read_bytes()
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path}: not a readable gzip file ({error})") from None


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """The uint8 array stored in an IDX file, which must have `ndim` dimensions."""
    data = read_file_bytes(path)
    if len(data) < 4:
        raise DataError(f"{path}: truncated: {len(data)} bytes, too short for the IDX magic number")
    zeros, type_code, file_ndim = struct.unpack(">HBB", data[:4])
    magic = int.from_bytes(data[:4], "big")
    expected_magic = (UNSIGNED_BYTE << 8) | ndim
    if zeros != 0:
        raise DataError(f"{path}: wrong magic number 0x{magic:08x}: not an IDX file "
                        f"(expected 0x{expected_magic:08x})")
    if type_code != UNSIGNED_BYTE:
        raise DataError(f"{path}: wrong dtype: IDX type code 0x{type_code:02x}, expected 0x08 "
                        f"(unsigned byte) (magic number 0x{magic:08x}, expected 0x{expected_magic:08x})")
    if file_ndim != ndim:
        raise DataError(f"{path}: wrong magic number 0x{magic:08x}: {file_ndim} dimensions, "
                        f"expected {ndim} (magic 0x{expected_magic:08x})")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DataError(f"{path}: truncated: the header needs {header_size} bytes, the file has {len(data)}")
    shape = struct.unpack(f">{ndim}I", data[4:header_size])
    expected_size, payload_size = math.prod(shape), len(data) - header_size
    if payload_size < expected_size:
        raise DataError(f"{path}: truncated: the header announces shape {shape} "
                        f"({expected_size} bytes) but only {payload_size} bytes follow")
    if payload_size > expected_size:
        raise DataError(f"{path}: {payload_size - expected_size} unexpected bytes after the "
                        f"{expected_size} bytes of shape {shape} the header announces")
    return np.frombuffer(data, np.uint8, count=expected_size, offset=header_size).reshape(shape)


def read_idx_images_and_labels(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) and labels (N,) from a pair of IDX files, checked against each other."""
    images = read_idx(images_path, ndim=3)
    if images.shape[1:] != IMAGE_SHAPE:
        raise DataError(f"{images_path}: wrong shape: images are {images.shape[1:]}, expected {IMAGE_SHAPE}")
    labels = read_idx(labels_path, ndim=1)
    check_images_and_labels(images, labels, f"{images_path} and {labels_path}")
    return images, labels


def check_images_and_labels(images: np.ndarray, labels: np.ndarray, where: str) -> None:
    """Raise DataError unless the counts agree and every label is a class index 0..9."""
    if len(images) != len(labels):
        raise DataError(f"{where}: image/label count mismatch: {len(images)} images, {len(labels)} labels")
    if labels.size and labels.max() >= NUM_CLASSES:
        bad = int(np.argmax(labels >= NUM_CLASSES))
        raise DataError(f"{where}: label out of range: label {int(labels[bad])} at index {bad}, "
                        f"expected 0..{NUM_CLASSES - 1}")
