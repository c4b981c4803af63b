"""Every user-facing error of jax-vae, with the exit code the CLI returns for it.

A `UserError` is printed by the CLI as one line `error: ...`; code that raises one has written nothing
(or, for `NonFiniteLossError` and `Interrupted`, kept the last good checkpoint). `DataError` and
`ConversionError` are also `ValueError`s, so library callers may catch them as such.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix, as one line; exit code 2."""

    exit_code = 2


class RunError(UserError):
    """A run folder, option or checkpoint that does not fit the request."""


class NonFiniteLossError(RunError):
    """Training produced a non-finite loss; the run stopped, its last good checkpoint kept."""

    exit_code = 1


class Interrupted(RunError):
    """Ctrl-C during training; the last checkpoint is kept and the run can be resumed."""

    exit_code = 130


class DataError(UserError, ValueError):
    """A dataset problem, naming the file and what is wrong."""


class ConversionError(UserError, ValueError):
    """A state_dict or param tree that does not fit the config; the message names the key."""


def os_error_text(err: OSError) -> str:
    """'<path>: <cause>' (both paths of a rename) for an OSError, e.g. 'runs/x/config.json: No space
    left on device'; the cause alone when the error names no path."""
    cause = err.strerror or str(err) or type(err).__name__
    paths = [str(p) for p in (err.filename, err.filename2) if p is not None]
    return f"{' -> '.join(paths)}: {cause}" if paths else cause


def one_line(err: BaseException, limit: int | None = None) -> str:
    """The error's text (or its `reason`, for URL errors; path and cause for OS errors) with all
    whitespace collapsed."""
    if isinstance(err, OSError) and not hasattr(err, "reason"):
        text = os_error_text(err)
    else:
        text = str(getattr(err, "reason", None) or err) or type(err).__name__
    text = " ".join(text.split())
    return text if limit is None else text[:limit]
