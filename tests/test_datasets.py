"""Datasets: readers on real and generated files, and downloads from local mirrors,
including the faults a real network produces (5xx answers, cut transfers, bad bytes)."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import logging
import os
import socket
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnn_pipeline.datasets import cifar10, digits, idx, image_folder
from cnn_pipeline.datasets.archive import extract_members
from cnn_pipeline.datasets.fashion_mnist import FASHION_MNIST
from cnn_pipeline.datasets.mirrors import (
    MIRROR_ENVIRONMENT_VARIABLE,
    Checksum,
    RemoteFile,
    RetryPolicy,
    fetch,
    mirrors_in_effect,
)
from cnn_pipeline.datasets.mnist import MNIST
from cnn_pipeline.errors import UserError
from cnn_pipeline.stages import download

from conftest import (
    REPO_ROOT,
    base_url,
    data_config,
    run_command,
    start_http_server,
    write_huge_png,
)

MNIST_TRAIN_LABEL_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
FAST_RETRIES = RetryPolicy(attempts_per_mirror=3, first_delay_seconds=0.01)

Serve = Callable[[Path], str]


# A mirror whose answers follow a script -------------------------------------------------


class ScriptedMirror:
    """Serves `files` on 127.0.0.1; each request for a file takes the next behaviour from its
    script: "ok" (honours Range), "ignore-range" (always the whole file), "500", or "cut"
    (announces the whole file, sends half, closes the connection)."""

    def __init__(self, files: dict[str, bytes], scripts: dict[str, list[str]]) -> None:
        self.files = files
        self.scripts = {name: list(script) for name, script in scripts.items()}
        self.requests: list[tuple[str, str | None]] = []
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                name = self.path.lstrip("/")
                mirror.requests.append((name, self.headers.get("Range")))
                if name not in mirror.files:
                    self.send_error(404)
                    return
                script = mirror.scripts.get(name, [])
                behaviour = script.pop(0) if script else "ok"
                body = mirror.files[name]
                if behaviour == "500":
                    self.send_error(500, "scripted failure")
                    return
                start = 0
                requested = self.headers.get("Range")
                if behaviour == "ok" and requested and requested.startswith("bytes="):
                    start = int(requested.removeprefix("bytes=").split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if behaviour == "cut":
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        self.server = start_http_server(Handler)
        self.url = base_url(self.server)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


StartMirror = Callable[..., ScriptedMirror]


@pytest.fixture
def scripted_mirror() -> Iterator[StartMirror]:
    mirrors: list[ScriptedMirror] = []

    def start(
        files: dict[str, bytes], scripts: dict[str, list[str]] | None = None
    ) -> ScriptedMirror:
        mirrors.append(ScriptedMirror(files, scripts or {}))
        return mirrors[-1]

    yield start
    for mirror in mirrors:
        mirror.close()


def sha256_file(content: bytes, name: str = "blob.bin") -> RemoteFile:
    return RemoteFile(name, (Checksum("sha256", hashlib.sha256(content).hexdigest()),))


def dead_url() -> str:
    """A 127.0.0.1 URL on a port nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


# Downloads ---------------------------------------------------------------------------------

CONTENT = os.urandom(300_000)


def test_server_error_then_success_is_retried(tmp_path: Path, scripted_mirror: StartMirror) -> None:
    mirror = scripted_mirror({"blob.bin": CONTENT}, {"blob.bin": ["500", "500", "ok"]})
    fetch(sha256_file(CONTENT), [mirror.url], tmp_path / "blob.bin", FAST_RETRIES)
    assert (tmp_path / "blob.bin").read_bytes() == CONTENT
    assert len(mirror.requests) == 3


def test_transfer_cut_midway_resumes_with_a_range_request(
    tmp_path: Path, scripted_mirror: StartMirror
) -> None:
    mirror = scripted_mirror({"blob.bin": CONTENT}, {"blob.bin": ["cut", "ok"]})
    fetch(sha256_file(CONTENT), [mirror.url], tmp_path / "blob.bin", FAST_RETRIES)
    assert (tmp_path / "blob.bin").read_bytes() == CONTENT
    (_, first_range), (_, second_range) = mirror.requests
    assert first_range is None
    assert second_range is not None and second_range.startswith("bytes=")
    assert int(second_range.removeprefix("bytes=").rstrip("-")) > 0


def test_cut_transfer_restarts_where_the_server_ignores_range(
    tmp_path: Path, scripted_mirror: StartMirror
) -> None:
    mirror = scripted_mirror({"blob.bin": CONTENT}, {"blob.bin": ["cut", "ignore-range"]})
    fetch(sha256_file(CONTENT), [mirror.url], tmp_path / "blob.bin", FAST_RETRIES)
    assert (tmp_path / "blob.bin").read_bytes() == CONTENT


def test_wrong_checksum_names_file_mirror_and_both_digests(
    tmp_path: Path, scripted_mirror: StartMirror
) -> None:
    mirror = scripted_mirror({"blob.bin": b"tampered"})
    remote = sha256_file(CONTENT)
    with pytest.raises(UserError) as raised:
        fetch(remote, [mirror.url], tmp_path / "blob.bin", FAST_RETRIES)
    message = str(raised.value)
    assert f"{mirror.url}blob.bin: checksum mismatch" in message
    assert remote.checksums[0].digest in message
    assert hashlib.sha256(b"tampered").hexdigest() in message
    assert list(tmp_path.iterdir()) == []  # nothing kept, no temporary leftovers


def test_persistent_failure_moves_on_to_the_next_mirror(
    tmp_path: Path, scripted_mirror: StartMirror
) -> None:
    broken = scripted_mirror({"blob.bin": CONTENT}, {"blob.bin": ["500"] * 3})
    good = scripted_mirror({"blob.bin": CONTENT})
    fetch(sha256_file(CONTENT), [dead_url(), broken.url, good.url], tmp_path / "b", FAST_RETRIES)
    assert (tmp_path / "b").read_bytes() == CONTENT
    assert len(broken.requests) == 3


def test_unreachable_mirrors_are_listed_with_the_offline_alternative(tmp_path: Path) -> None:
    urls = [dead_url(), dead_url()]
    with pytest.raises(UserError) as raised:
        download.run(data_config("mnist", mirrors=urls), tmp_path / "raw", FAST_RETRIES)
    message = str(raised.value)
    for url in urls:
        assert f"{url}train-images-idx3-ubyte.gz" in message
    assert "data=digits" in message
    assert not (tmp_path / "raw").exists()


def test_mnist_download_from_local_mirror(
    tmp_path: Path, mnist_dir: Path, serve_directory: Serve
) -> None:
    # These .gz files were recompressed: only the content checksum can match them.
    raw_dir = tmp_path / "data" / "raw"
    download.run(data_config("mnist", mirrors=[serve_directory(mnist_dir)]), raw_dir)
    assert sorted(path.name for path in raw_dir.iterdir()) == sorted(
        remote.name for remote in MNIST.files
    )


def test_truncated_gzip_is_refused_and_not_kept(
    tmp_path: Path, mnist_dir: Path, scripted_mirror: StartMirror
) -> None:
    files = {remote.name: (mnist_dir / remote.name).read_bytes() for remote in MNIST.files}
    files["train-images-idx3-ubyte.gz"] = files["train-images-idx3-ubyte.gz"][: 1 << 20]
    mirror = scripted_mirror(files)
    with pytest.raises(UserError, match="not a complete gzip file"):
        download.run(data_config("mnist", mirrors=[mirror.url]), tmp_path / "raw", FAST_RETRIES)
    assert not (tmp_path / "raw").exists()


def test_mirror_setting_and_environment_variable_point_everything_at_one_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert mirrors_in_effect(["http://a/", "http://b/"], None) == ["http://a/", "http://b/"]
    assert mirrors_in_effect(["http://a/"], "http://local/") == ["http://local/"]
    assert mirrors_in_effect([], str(tmp_path)) == [tmp_path.resolve().as_uri()]
    monkeypatch.setenv(MIRROR_ENVIRONMENT_VARIABLE, "http://env/")
    assert mirrors_in_effect(["http://a/"], "http://local/") == ["http://env/"]


def test_download_from_a_local_folder(tmp_path: Path) -> None:
    folder = tmp_path / "offline"
    folder.mkdir()
    (folder / "blob.bin").write_bytes(CONTENT)
    fetch(sha256_file(CONTENT), mirrors_in_effect([], str(folder)), tmp_path / "blob.bin")
    assert (tmp_path / "blob.bin").read_bytes() == CONTENT


# IDX datasets (MNIST, Fashion-MNIST) ----------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        size.to_bytes(4, "big") for size in array.shape
    )
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def test_mnist_files_parse_with_their_published_label_counts(mnist_dir: Path) -> None:
    raw = idx.read(MNIST, mnist_dir)
    assert raw.images.shape == (60000, 28, 28, 1)
    assert raw.test_images is not None and raw.test_labels is not None
    assert raw.test_images.shape == (10000, 28, 28, 1)
    assert np.bincount(raw.labels).tolist() == MNIST_TRAIN_LABEL_COUNTS
    assert np.bincount(raw.test_labels).tolist() == MNIST_TEST_LABEL_COUNTS


def test_fashion_mnist_format_downloads_and_carries_class_names(
    tmp_path: Path, scripted_mirror: StartMirror
) -> None:
    rng = np.random.default_rng(0)
    arrays = {
        FASHION_MNIST.train_images.name: rng.integers(0, 256, (30, 28, 28)),
        FASHION_MNIST.train_labels.name: np.arange(30) % 10,
        FASHION_MNIST.test_images.name: rng.integers(0, 256, (10, 28, 28)),
        FASHION_MNIST.test_labels.name: np.arange(10),
    }
    files = {name: idx_bytes(array) for name, array in arrays.items()}
    # Same layout as the real dataset, pinned to the generated files' checksums.
    spec = idx.IdxDataset(
        *(
            RemoteFile(remote.name, (Checksum("md5", hashlib.md5(files[remote.name]).hexdigest()),))
            for remote in FASHION_MNIST.files
        ),
        class_names=FASHION_MNIST.class_names,
    )
    mirror = scripted_mirror(files)
    idx.fetch_all(spec, [mirror.url], tmp_path / "raw", FAST_RETRIES)
    raw = idx.read(spec, tmp_path / "raw")
    assert raw.images.shape == (30, 28, 28, 1)
    np.testing.assert_array_equal(raw.images[..., 0], arrays[FASHION_MNIST.train_images.name])
    assert raw.class_names[0] == "T-shirt/top" and raw.class_names[9] == "Ankle boot"


def recompress(source: Path, destination: Path, level: int) -> None:
    """Write `source` gzip-decompressed then compressed again at `level`, as a distribution
    package or a mirror does: same content, other .gz bytes."""
    with gzip.open(source, "rb") as stream:
        content = stream.read()
    destination.write_bytes(gzip.compress(content, compresslevel=level, mtime=0))


@pytest.fixture(scope="module")
def recompressed_fashion_mnist(
    tmp_path_factory: pytest.TempPathFactory, fashion_mnist_dir: Path
) -> Path:
    folder = tmp_path_factory.mktemp("recompressed-fashion-mnist")
    for remote in FASHION_MNIST.files:
        recompress(fashion_mnist_dir / remote.name, folder / remote.name, level=1)
    return folder


def test_recompressed_fashion_mnist_is_accepted_by_its_content(
    tmp_path: Path, recompressed_fashion_mnist: Path, serve_directory: Serve
) -> None:
    published_md5s = {
        remote.name: checksum.digest
        for remote in FASHION_MNIST.files
        for checksum in remote.checksums
        if checksum.algorithm == "md5"
    }
    for name, md5 in published_md5s.items():
        # Else this test would pass on the published MD5s alone.
        assert hashlib.md5((recompressed_fashion_mnist / name).read_bytes()).hexdigest() != md5
    for mirror in (serve_directory(recompressed_fashion_mnist), str(recompressed_fashion_mnist)):
        raw_dir = tmp_path / f"raw-{len(list(tmp_path.iterdir()))}"
        download.run(data_config("fashion_mnist", mirror=mirror), raw_dir)
        raw = idx.read(FASHION_MNIST, raw_dir)
        assert raw.images.shape == (60000, 28, 28, 1)
        assert np.bincount(raw.labels).tolist() == [6000] * 10
        assert raw.test_labels is not None
        assert np.bincount(raw.test_labels).tolist() == [1000] * 10


def test_corrupted_fashion_mnist_file_is_refused_with_both_checksums_named(
    tmp_path: Path, recompressed_fashion_mnist: Path
) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for remote in FASHION_MNIST.files:
        (mirror / remote.name).write_bytes((recompressed_fashion_mnist / remote.name).read_bytes())
    # One flipped pixel in a complete, well-formed gzip file: only the checksums can tell.
    name = FASHION_MNIST.test_images.name
    with gzip.open(mirror / name, "rb") as stream:
        content = bytearray(stream.read())
    content[-1] ^= 0xFF
    (mirror / name).write_bytes(gzip.compress(bytes(content), compresslevel=1))
    with pytest.raises(UserError) as raised:
        download.run(data_config("fashion_mnist", mirror=str(mirror)), tmp_path / "raw")
    message = str(raised.value)
    assert f"could not download {name}" in message
    assert "checksum mismatch" in message
    assert "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b" in message
    assert "bef4ecab320f06d8554ea6380940ec79" in message
    assert not (tmp_path / "raw").exists()


DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(
    not (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"Debian's dataset-fashion-mnist is not installed ({DEBIAN_FASHION_MNIST} is absent)",
)
def test_debian_fashion_mnist_package_is_a_mirror(tmp_path: Path) -> None:
    download.run(data_config("fashion_mnist", mirror=str(DEBIAN_FASHION_MNIST)), tmp_path / "raw")
    assert sorted(path.name for path in (tmp_path / "raw").iterdir()) == sorted(
        remote.name for remote in FASHION_MNIST.files
    )


def test_idx_with_a_wrong_size_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bad-idx1-ubyte.gz"
    header = b"\x00\x00\x08\x01" + (10).to_bytes(4, "big")
    path.write_bytes(gzip.compress(header + bytes(7)))
    with pytest.raises(UserError, match="declares shape"):
        idx.read_idx(path)


# CIFAR-10 ------------------------------------------------------------------------------


def cifar_archive(records_per_batch: int, extra: dict[str, bytes] | None = None) -> bytes:
    """A cifar-10-binary.tar.gz in the real layout; pixel values encode (image, channel)."""
    rng = np.random.default_rng(1)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        names = [*cifar10.TRAIN_FILES, cifar10.TEST_FILE]
        members = {
            f"{cifar10.MEMBER_DIR}/{name}": _cifar_batch(records_per_batch, rng) for name in names
        }
        members[f"{cifar10.MEMBER_DIR}/batches.meta.txt"] = b"airplane\n"
        for name, content in {**members, **(extra or {})}.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _cifar_batch(count: int, rng: np.random.Generator) -> bytes:
    labels = rng.integers(0, 10, count, dtype=np.uint8)
    planes = np.zeros((count, 3, 32, 32), dtype=np.uint8)
    planes[:, 0] = 10  # red
    planes[:, 1] = 20  # green
    planes[:, 2] = 30  # blue
    planes[:, 0, 0, 1] = 99  # red channel, row 0, column 1
    return np.concatenate([labels[:, None], planes.reshape(count, -1)], axis=1).tobytes()


def test_cifar10_binary_archive_downloads_and_parses(
    tmp_path: Path, scripted_mirror: StartMirror
) -> None:
    content = cifar_archive(records_per_batch=4)
    mirror = scripted_mirror({cifar10.ARCHIVE.name: content})
    remote = sha256_file(content, cifar10.ARCHIVE.name)
    cifar10.fetch_all([mirror.url], tmp_path / "raw", FAST_RETRIES, archive=remote)
    raw = cifar10.read(tmp_path / "raw")
    assert raw.images.shape == (20, 32, 32, 3) and raw.images.dtype == np.uint8
    assert raw.test_images is not None and raw.test_images.shape == (4, 32, 32, 3)
    assert raw.images[0, 5, 5].tolist() == [10, 20, 30]  # channel-major bytes became RGB
    assert raw.images[0, 0, 1, 0] == 99
    assert raw.class_names[3] == "cat"
    assert sorted(p.name for p in (tmp_path / "raw" / cifar10.MEMBER_DIR).iterdir()) == sorted(
        [*cifar10.TRAIN_FILES, cifar10.TEST_FILE]
    )
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]  # the archive is not kept


@pytest.mark.parametrize(
    "member", ["../escaped.bin", "/tmp/absolute-escape.bin", "cifar-10-batches-bin/../../up.bin"]
)
def test_archive_member_outside_the_target_is_refused(tmp_path: Path, member: str) -> None:
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(cifar_archive(1, extra={member: b"payload"}))
    target = tmp_path / "deep" / "target"
    wanted = {f"{cifar10.MEMBER_DIR}/{name}" for name in cifar10.TRAIN_FILES}
    with pytest.raises(UserError, match="unsafe"):
        extract_members(archive, wanted, target)
    assert not target.exists()
    assert not (tmp_path / "deep" / "escaped.bin").exists()
    assert not Path("/tmp/absolute-escape.bin").exists()


def test_archive_with_a_link_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "link.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        link = tarfile.TarInfo(f"{cifar10.MEMBER_DIR}/data_batch_1.bin")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(UserError, match="is a link"):
        extract_members(archive, {f"{cifar10.MEMBER_DIR}/data_batch_1.bin"}, tmp_path / "t")


# Digits and image folders --------------------------------------------------------------


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


def make_image_folder(root: Path, classes: dict[str, int], corrupt: int = 0) -> Path:
    formats = [("png", "PNG"), ("jpg", "JPEG"), ("bmp", "BMP"), ("gif", "GIF")]
    for class_index, (name, count) in enumerate(classes.items()):
        folder = root / name
        folder.mkdir(parents=True)
        for index in range(count):
            suffix, kind = formats[index % len(formats)]
            colour = (40 * class_index, 200, 10 * index % 255)
            Image.new("RGB", (20 + index, 15), colour).save(folder / f"{index}.{suffix}", kind)
    for index in range(corrupt):
        (root / next(iter(classes)) / f"broken{index}.jpg").write_bytes(b"not a jpeg")
    (root / next(iter(classes)) / "notes.txt").write_text("ignored: not an image")
    return root


def test_image_folder_reads_every_format_and_skips_unreadable_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = make_image_folder(tmp_path / "pets", {"dogs": 5, "cats": 4}, corrupt=2)
    config = data_config("image_folder", path=str(source), image_size=16, color_mode="rgb")
    download.run(config, tmp_path / "raw")
    with caplog.at_level(logging.WARNING):
        raw = image_folder.read(tmp_path / "raw", 16, "rgb")
    assert raw.class_names == ("cats", "dogs")  # sorted folder names
    assert raw.images.shape == (9, 16, 16, 3) and raw.images.dtype == np.uint8
    assert np.bincount(raw.labels).tolist() == [4, 5]
    assert "skipped 2 unreadable image file(s)" in caplog.text
    assert "broken0.jpg" in caplog.text or "000005.jpg" in caplog.text
    assert raw.test_images is None
    gray = image_folder.read(tmp_path / "raw", 8, "grayscale")
    assert gray.images.shape == (9, 8, 8, 1)


def test_image_folder_skips_images_past_the_decompression_bomb_limit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = make_image_folder(tmp_path / "pets", {"cats": 2, "dogs": 2})
    write_huge_png(source / "cats" / "refused.png", 14_000, 14_000)  # Pillow raises
    write_huge_png(source / "dogs" / "warned.png", 10_000, 10_000)  # Pillow only warns
    download.run(data_config("image_folder", path=str(source)), tmp_path / "raw")
    with caplog.at_level(logging.WARNING):
        raw = image_folder.read(tmp_path / "raw", 8, "grayscale")
    assert np.bincount(raw.labels).tolist() == [2, 2]
    assert "skipped 2 unreadable image file(s)" in caplog.text
    assert caplog.text.count("could be decompression bomb") == 2


def test_image_folder_with_a_separate_test_folder(tmp_path: Path) -> None:
    train = make_image_folder(tmp_path / "train", {"a": 3, "b": 3})
    test = make_image_folder(tmp_path / "test", {"a": 2, "b": 1})
    config = data_config("image_folder", path=str(train), test_path=str(test), test_fraction=None)
    download.run(config, tmp_path / "raw")
    raw = image_folder.read(tmp_path / "raw", 12, "rgb")
    assert raw.test_labels is not None and np.bincount(raw.test_labels).tolist() == [2, 1]


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        ({"only": 3}, "single class"),
        ({"a": 2, "b": 0}, r"\['b'\] hold no PNG, JPEG, BMP or GIF"),
        ({}, "no class sub-folders"),
    ],
)
def test_image_folder_mistakes_stop_with_a_clear_error(
    tmp_path: Path, classes: dict[str, int], message: str
) -> None:
    source = tmp_path / "images"
    source.mkdir()
    for name, count in classes.items():
        (source / name).mkdir()
        for index in range(count):
            Image.new("L", (8, 8)).save(source / name / f"{index}.png")
    config = data_config("image_folder", path=str(source))
    with pytest.raises(UserError, match=message):
        download.run(config, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_class_without_a_readable_image_stops_preprocessing(tmp_path: Path) -> None:
    source = make_image_folder(tmp_path / "images", {"a": 2, "b": 1})
    for image in (source / "b").iterdir():
        image.write_bytes(b"garbage")
    (source / "b" / "0.png").write_bytes(b"garbage")
    download.run(data_config("image_folder", path=str(source)), tmp_path / "raw")
    with pytest.raises(UserError, match=r"class\(es\) \['b'\] have no readable image"):
        image_folder.read(tmp_path / "raw", 8, "rgb")


def test_relative_image_folder_is_found_from_a_queued_experiments_copy(tmp_path: Path) -> None:
    # `dvc exp run --queue` runs stages in a temporary copy; DVC_ROOT names the real repository.
    repository, temporary_copy = tmp_path / "repository", tmp_path / "copy"
    make_image_folder(repository / "my_images", {"a": 2, "b": 2})
    temporary_copy.mkdir()
    run_command(
        [
            "cnn-pipeline",
            "params",
            "--config-dir",
            str(REPO_ROOT / "conf"),
            "--output",
            "params.yaml",
            "data=image_folder",
            "data.path=my_images",
            "data.image_size=8",
        ],
        temporary_copy,
    )
    run_command(["cnn-pipeline", "download"], temporary_copy, DVC_ROOT=str(repository))
    assert sorted(p.name for p in (temporary_copy / "data/raw/train").iterdir()) == ["a", "b"]
