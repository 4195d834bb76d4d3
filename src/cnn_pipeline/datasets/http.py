"""Fetch one file from a list of mirrors, verify it, and write it atomically."""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from cnn_pipeline.atomic import atomic_path

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 16
TIMEOUT_SECONDS = 30


class ChecksumMismatch(Exception):
    """The downloaded bytes are not the expected file."""


def fetch_from_mirrors(
    file_name: str,
    mirrors: list[str],
    destination: Path,
    verify: Callable[[Path], None],
) -> list[str]:
    """Download `file_name` from the first mirror that serves it intact.

    `verify` raises ChecksumMismatch for a bad file. Returns the failures ("URL: reason")
    of every mirror tried; `destination` exists only if one mirror succeeded.
    """
    failures: list[str] = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + file_name
        try:
            with atomic_path(destination) as staged:
                _download(url, staged)
                verify(staged)
            logger.info("downloaded %s from %s", file_name, url)
            return failures
        except (urllib.error.URLError, OSError, ValueError, ChecksumMismatch) as error:
            reason = getattr(error, "reason", None) or error
            logger.warning("%s failed: %s", url, reason)
            failures.append(f"{url}: {reason}")
    return failures


def _download(url: str, target: Path) -> None:
    with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        with (
            target.open("wb") as output,
            tqdm(total=total, unit="B", unit_scale=True, desc=target.name, leave=False) as bar,
        ):
            received = 0
            while chunk := response.read(CHUNK_BYTES):
                output.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        if total is not None and received != total:
            raise OSError(f"connection closed after {received} of {total} bytes")
