"""Dataset readers on real files, and the MNIST download through a local mirror."""

from __future__ import annotations

import gzip
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from cnn_pipeline.config import DataConfig
from cnn_pipeline.datasets import digits, mnist
from cnn_pipeline.errors import UserError
from cnn_pipeline.stages import download

MNIST_TRAIN_LABEL_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]

Serve = Callable[[Path], str]


def mnist_config(mirrors: list[str]) -> DataConfig:
    return DataConfig(
        name="mnist", mirrors=mirrors, test_fraction=None, validation_fraction=0.1, split_seed=0
    )


def test_digits_match_scikit_learns_loader(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    digits.fetch(tmp_path / "raw")
    raw = digits.read(tmp_path / "raw")
    reference = load_digits()
    assert raw.images.shape == (1797, 8, 8, 1)
    assert raw.images.dtype == np.uint8
    np.testing.assert_array_equal(raw.labels, reference.target)
    expected = np.rint(reference.images * 255 / 16).astype(np.uint8)
    np.testing.assert_array_equal(raw.images[..., 0], expected)
    assert raw.test_images is None


def test_mnist_files_parse_with_their_published_label_counts(mnist_dir: Path) -> None:
    raw = mnist.read(mnist_dir)
    assert raw.images.shape == (60000, 28, 28, 1)
    assert raw.test_images is not None and raw.test_labels is not None
    assert raw.test_images.shape == (10000, 28, 28, 1)
    assert np.bincount(raw.labels).tolist() == MNIST_TRAIN_LABEL_COUNTS
    assert np.bincount(raw.test_labels).tolist() == MNIST_TEST_LABEL_COUNTS


def test_idx_with_a_wrong_size_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bad-idx1-ubyte.gz"
    header = b"\x00\x00\x08\x01" + (10).to_bytes(4, "big")
    path.write_bytes(gzip.compress(header + bytes(7)))
    with pytest.raises(UserError, match="declares shape"):
        mnist.read_idx(path)


def test_download_from_local_mirror_verifies_content(
    tmp_path: Path, mnist_dir: Path, serve_directory: Serve
) -> None:
    raw_dir = tmp_path / "data" / "raw"
    download.run(mnist_config([serve_directory(mnist_dir)]), raw_dir)
    assert sorted(path.name for path in raw_dir.iterdir()) == sorted(mnist.DECOMPRESSED_SHA256)
    for name, expected in mnist.DECOMPRESSED_SHA256.items():
        assert mnist.decompressed_sha256(raw_dir / name) == expected


def test_dead_mirror_falls_back_to_the_next(
    tmp_path: Path, mnist_dir: Path, serve_directory: Serve
) -> None:
    raw_dir = tmp_path / "raw"
    download.run(mnist_config([_dead_url(), serve_directory(mnist_dir)]), raw_dir)
    assert len(list(raw_dir.iterdir())) == 4


def test_wrong_checksum_names_file_and_mirror_and_leaves_nothing(
    tmp_path: Path, mnist_dir: Path, serve_directory: Serve
) -> None:
    corrupt = tmp_path / "mirror"
    shutil.copytree(mnist_dir, corrupt)
    labels = corrupt / "t10k-labels-idx1-ubyte.gz"
    content = bytearray(gzip.decompress(labels.read_bytes()))
    content[100] = (content[100] + 1) % 10  # one wrong label
    labels.write_bytes(gzip.compress(bytes(content)))
    url = serve_directory(corrupt)
    raw_dir = tmp_path / "data" / "raw"

    with pytest.raises(UserError) as raised:
        download.run(mnist_config([url]), raw_dir)

    message = str(raised.value)
    assert f"{url}t10k-labels-idx1-ubyte.gz: checksum mismatch" in message
    assert mnist.DECOMPRESSED_SHA256["t10k-labels-idx1-ubyte.gz"] in message
    assert not raw_dir.exists()
    assert list((tmp_path / "data").iterdir()) == []  # no temporary leftovers either


def test_truncated_download_is_not_kept(
    tmp_path: Path, mnist_dir: Path, serve_directory: Serve
) -> None:
    truncated = tmp_path / "mirror"
    shutil.copytree(mnist_dir, truncated)
    images = truncated / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[: 1 << 20])
    with pytest.raises(UserError, match="not a complete gzip file"):
        download.run(mnist_config([serve_directory(truncated)]), tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_unreachable_mirrors_are_listed_with_the_offline_alternative(tmp_path: Path) -> None:
    urls = [_dead_url(), _dead_url()]
    with pytest.raises(UserError) as raised:
        download.run(mnist_config(urls), tmp_path / "raw")
    message = str(raised.value)
    for url in urls:
        assert f"{url}train-images-idx3-ubyte.gz" in message
    assert "data=digits" in message
    assert not (tmp_path / "raw").exists()


def _dead_url() -> str:
    """A 127.0.0.1 URL on a port nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/"
