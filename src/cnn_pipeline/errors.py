"""The one exception type a user's mistake raises, so the CLI can print it as one line."""


class UserError(Exception):
    """A problem the user can fix (a bad param, a dead mirror, a missing file).

    The command line prints its message alone, without a traceback, and exits with status 2.
    The message says what was wrong, the value given, and what to do instead.
    """
