"""Errors a user can act on: each names the file or option at fault and what is wrong with it."""

import errno
import os
import re


class MNADError(Exception):
    """Base class of the errors mnad raises for bad input."""


class DataError(MNADError):
    """A frame, video, folder or label file that cannot be used."""


class ConfigError(MNADError):
    """A recipe or option that is unknown or out of range."""


class CheckpointError(MNADError):
    """A checkpoint that is missing, damaged or belongs to another model."""


class Terminated(BaseException):  # noqa: N818 (like KeyboardInterrupt: a signal, not an error)
    """SIGTERM or SIGHUP: raised by the CLI's handler so that a run unwinds like on Ctrl-C, completing what it writes.
    ``signal`` is the signal's name ('SIGTERM', 'SIGHUP'), for messages."""

    def __init__(self, signal: str = "SIGTERM") -> None:
        super().__init__(signal)
        self.signal = signal


# a lone surrogate that is not one of the \udc80-\udcff that stand for the bytes of a name that is not UTF-8 (a
# "\ud800" read from JSON, say): no encoding holds it
STRAY_SURROGATE = re.compile("[\ud800-\udc7f\udd00-\udfff]")


def printable(text: str | os.PathLike) -> str:
    """``text`` as a message can show it: the bytes of a name that is not valid UTF-8 (held by Python as surrogates,
    which a UTF-8 terminal or JSON reader may refuse) as \\xNN escapes, any other lone surrogate as \\uNNNN. Never
    raises: it runs inside the CLI's error and warning handlers."""
    text = os.fsdecode(text)
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # surrogateescape takes only the surrogates that stand for bytes
        text = STRAY_SURROGATE.sub(lambda m: m.group().encode("utf-8", "backslashreplace").decode("ascii"), text)
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def os_reason(exc: OSError) -> str:
    """Why an OS call failed, for one error line: 'disk full' where it was, else the system's words."""
    return "disk full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
