"""The one exception type a user's mistake raises, so the CLI can print it as one line."""


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
