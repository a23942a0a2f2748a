"""Exceptions: one type for every problem a user can fix (the CLI prints it as one line and exits 2), and
SIGTERM turned into one (exit 143)."""


class LifeloraError(Exception):
    """A user-facing error: the message names the file or argument and what is wrong with it."""


class Terminated(BaseException):
    """SIGTERM (`kill`, a scheduler's stop) raised in the main thread, so a stopped run unwinds like an
    interrupted one and records how it ended instead of staying `running`."""
