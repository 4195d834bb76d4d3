"""Fetch a published file from a list of mirrors: retried, resumed, verified, atomic.

Each mirror is tried in order. Timeouts, refused connections and 5xx answers are retried
with exponential backoff; a transfer cut off midway resumes with an HTTP Range request
(or restarts where the server ignores it). A file is kept only if one of its published
checksums matches; a mismatch deletes it and moves on to the next mirror.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from cnn_pipeline.atomic import atomic_path
from cnn_pipeline.errors import UserError

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 16
TIMEOUT_SECONDS = 30
MIRROR_ENVIRONMENT_VARIABLE = "CNN_PIPELINE_MIRROR"


@dataclass(frozen=True)
class Checksum:
    algorithm: Literal["md5", "sha256"]
    digest: str
    # True: the digest is of the gzip-decompressed content, so a mirror that recompressed
    # the file still passes; False: of the file's bytes as published.
    of_decompressed_content: bool = False

    def describe(self) -> str:
        what = "decompressed content" if self.of_decompressed_content else "file"
        return f"{self.algorithm.upper()} {self.digest} of the {what}"


@dataclass(frozen=True)
class RemoteFile:
    name: str  # the file's name on every mirror
    checksums: tuple[Checksum, ...]  # any one matching is enough


@dataclass(frozen=True)
class RetryPolicy:
    attempts_per_mirror: int = 4
    first_delay_seconds: float = 1.0  # doubles after every failed attempt


class ChecksumMismatch(Exception):
    """The downloaded bytes are not the published file."""


class _Retryable(Exception):
    """A failure worth another attempt on the same mirror (timeout, 5xx, cut transfer)."""


def mirrors_in_effect(mirrors: list[str], mirror: str | None) -> list[str]:
    """The mirrors to try: $CNN_PIPELINE_MIRROR, else data.mirror, else data.mirrors.

    A local folder (an existing path) becomes a file:// URL.
    """
    override = os.environ.get(MIRROR_ENVIRONMENT_VARIABLE) or mirror
    chosen = [override] if override else mirrors
    return [Path(entry).resolve().as_uri() if Path(entry).is_dir() else entry for entry in chosen]


def digest_of(path: Path, checksum: Checksum) -> str:
    digest = hashlib.new(checksum.algorithm)
    opener = gzip.open if checksum.of_decompressed_content else open
    with opener(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, remote: RemoteFile) -> None:
    """Raise ChecksumMismatch unless one of the published checksums matches."""
    actual: list[str] = []
    for checksum in remote.checksums:
        try:
            value = digest_of(path, checksum)
        except (OSError, EOFError) as error:
            actual.append(f"no {checksum.describe()} (not a complete gzip file: {error})")
            continue
        if value == checksum.digest:
            return
        actual.append(f"{checksum.algorithm.upper()} {value}")
    expected = " or ".join(checksum.describe() for checksum in remote.checksums)
    raise ChecksumMismatch(f"checksum mismatch: expected {expected}; got {', '.join(actual)}")


def fetch(
    remote: RemoteFile, mirrors: list[str], destination: Path, policy: RetryPolicy | None = None
) -> None:
    """Download `remote` into `destination` from the first mirror that serves it intact.

    Raises UserError naming every URL tried and why it failed.
    """
    policy = policy or RetryPolicy()
    failures: list[str] = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + remote.name
        try:
            with atomic_path(destination) as staged:
                _download_with_retries(url, staged, policy)
                verify(staged, remote)
            logger.info("downloaded %s from %s", remote.name, url)
            return
        except ChecksumMismatch as error:
            logger.warning("%s: %s", url, error)
            failures.append(f"{url}: {error}")
        except (_Retryable, urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", None) or error
            logger.warning("%s failed: %s", url, reason)
            failures.append(f"{url}: {reason}")
    raise UserError(
        f"could not download {remote.name} from any mirror; tried "
        + ("; ".join(failures) if failures else "no mirror (the mirror list is empty)")
        + ". Check data.mirrors (or data.mirror, or $"
        + MIRROR_ENVIRONMENT_VARIABLE
        + "), or use `data=digits`, which works offline"
    )


def _download_with_retries(url: str, target: Path, policy: RetryPolicy) -> None:
    delay = policy.first_delay_seconds
    for attempt in range(1, policy.attempts_per_mirror + 1):
        try:
            _download(url, target)
            return
        except _Retryable as error:
            if attempt == policy.attempts_per_mirror:
                raise
            logger.warning(
                "%s: %s; retrying in %.1f s (attempt %d of %d)",
                url,
                error,
                delay,
                attempt + 1,
                policy.attempts_per_mirror,
            )
            time.sleep(delay)
            delay *= 2


def _download(url: str, target: Path) -> None:
    """One attempt; appends to a partial `target` when the server honours a Range request."""
    have = target.stat().st_size if target.exists() else 0
    request = urllib.request.Request(url)
    if have and url.startswith(("http://", "https://")):
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS)
    except urllib.error.HTTPError as error:
        if error.code >= 500 or error.code == 429:
            raise _Retryable(f"HTTP {error.code} {error.reason}") from None
        raise
    except (TimeoutError, ConnectionError) as error:
        raise _Retryable(str(error) or type(error).__name__) from None
    except urllib.error.URLError as error:
        if isinstance(error.reason, (TimeoutError, ConnectionError)):
            raise _Retryable(str(error.reason)) from None
        raise
    with response:
        resumed = getattr(response, "status", 200) == 206
        if not resumed:
            have = 0  # the server sent the whole file: start over
        length = int(response.headers.get("Content-Length") or 0) or None
        total = have + length if length is not None else None
        received = 0
        with (
            target.open("ab" if resumed else "wb") as output,
            tqdm(
                total=total, initial=have, unit="B", unit_scale=True, desc=target.name, leave=False
            ) as bar,
        ):
            try:
                while chunk := response.read(CHUNK_BYTES):
                    output.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except (http.client.IncompleteRead, TimeoutError, ConnectionError) as error:
                raise _Retryable(
                    f"transfer cut off after {have + received} bytes ({error!r})"
                ) from None
        if length is not None and received < length:
            raise _Retryable(f"connection closed after {have + received} of {total} bytes")
