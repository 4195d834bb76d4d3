"""The one exception type a user's mistake raises, so the CLI can print it as one line, and
the wording helpers its messages share."""

from __future__ import annotations

import difflib


class UserError(Exception):
    """A problem the user can fix (a bad param, a dead mirror, a missing file).

    The command line prints its message alone, without a traceback, and exits with status 2.
    The message says what was wrong, the value given, and what to do instead.
    """


class TrainingInterrupted(UserError):
    """Ctrl-C or SIGTERM during training: the finished epochs are kept, and the message says
    from which epoch `dvc repro` resumes. Printed as one line; exit status 130."""


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type's name if it has none): what a
    one-line UserError quotes of a library's multi-line message."""
    message = str(error).strip()
    return message.splitlines()[0] if message else type(error).__name__


def nearest(name: str, known: list[str]) -> str | None:
    """The known name closest to a misspelt one (difflib's ratio of at least 0.6), if any."""
    matches = difflib.get_close_matches(name, known, n=1)
    return matches[0] if matches else None


def nearest_key_hint(key: str, known: list[str]) -> str:
    """'did you mean train.learning_rate?' for a misspelt key, else the keys there are."""
    parent, _, name = key.rpartition(".")
    prefix = f"{parent}." if parent else ""
    match = nearest(name, known)
    if match is not None:
        return f"did you mean {prefix}{match}?"
    return f"the keys there are {', '.join(prefix + k for k in known)}"
