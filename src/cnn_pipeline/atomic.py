"""Write outputs under a temporary name and rename them when complete.

An interrupted or failed stage then never leaves a file or folder that looks finished.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(final_path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `final_path`; move it into place when the block succeeds.

    Works for files and folders alike; whatever was at `final_path` is replaced only on success.
    """
    final_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(
        tempfile.mkdtemp(prefix=f".{final_path.name}.", suffix=".tmp", dir=final_path.parent)
    )
    staged = temporary / final_path.name
    try:
        yield staged
        _replace(staged, final_path)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _replace(staged: Path, final_path: Path) -> None:
    if final_path.is_dir() and not final_path.is_symlink():
        shutil.rmtree(final_path)
    os.replace(staged, final_path)


def write_json(document: object, path: Path) -> None:
    """Write `document` as indented JSON, atomically."""
    import json

    with atomic_path(path) as staged:
        staged.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
