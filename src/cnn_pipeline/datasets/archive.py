"""Extract chosen members of a tar archive without letting any write outside the target."""

from __future__ import annotations

import tarfile
from pathlib import Path

from cnn_pipeline.errors import UserError


def extract_members(archive: Path, wanted: set[str], target: Path) -> None:
    """Extract exactly the `wanted` member names, each a regular file, into `target`.

    Any member that would land outside `target` (an absolute path, `..`, a link) makes the
    whole archive suspect: nothing is extracted and UserError says which member it was.
    tarfile's "data" filter (Python 3.11.4+) enforces the same rules as a second guard.
    """
    root = target.resolve()
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                destination = (root / member.name).resolve()
                if not destination.is_relative_to(root) or member.issym() or member.islnk():
                    raise UserError(
                        f"{archive} is unsafe: member {member.name!r} would write outside "
                        f"{target} or is a link; nothing was extracted"
                    )
            chosen = [m for m in members if m.name in wanted and m.isfile()]
            missing = wanted - {m.name for m in chosen}
            if missing:
                raise UserError(
                    f"{archive} lacks {sorted(missing)}: it is not the expected "
                    "archive; run `dvc repro -f download`"
                )
            target.mkdir(parents=True, exist_ok=True)
            tar.extractall(target, members=chosen, filter="data")
    except (tarfile.TarError, OSError, EOFError) as error:
        raise UserError(f"{archive} is not a readable tar archive: {error}") from None
