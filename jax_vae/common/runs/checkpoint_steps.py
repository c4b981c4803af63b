"""Which checkpoint step to read, the same way in both frameworks' checkpoint.py.

A step is read when it is intact: `Steps.latest` is the newest intact one, with a one-line note on
stderr for each newer step that is unreadable or incomplete (said once per step); `Steps.pick(step)`
is the requested one, or a one-line RunError that lists the intact steps. Resume, evaluate and export
all read their checkpoints through it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from jax_vae.common.errors import RunError

Check = Callable[[int], "str | None"]  # step -> why it cannot be read ("unreadable (...)"), or None


def note(line: str) -> None:
    """One line `note: ...` on stderr."""
    print(f"note: {line}", file=sys.stderr, flush=True)


class Steps:
    """The steps of one checkpoints folder and their problems, each step checked once."""

    def __init__(self, directory: Path, check: Check) -> None:
        self.directory = directory
        self._check = check
        self._problems: dict[int, str | None] = {}
        self._noted: set[int] = set()

    def problem(self, step: int) -> str | None:
        """Why checkpoint `step` cannot be read (a few words), or None when it is intact."""
        if step not in self._problems:
            self._problems[step] = self._check(step)
        return self._problems[step]

    def set(self, step: int, problem: str | None) -> None:
        """Record what is known of `step` (None: intact, e.g. just written by this process)."""
        self._problems[step] = problem
        self._noted.discard(step)

    def latest(self, steps: Iterable[int], unfinished: Iterable[int] = ()) -> int | None:
        """The newest intact of `steps` (None when there are none); a note for each newer broken
        step and unfinished save; a RunError when steps exist but none is intact."""
        ordered = sorted(steps, reverse=True)
        chosen = next((s for s in ordered if self.problem(s) is None), None)
        if chosen is None and ordered:
            raise RunError(
                f"no intact checkpoint in {self.directory}: "
                + "; ".join(f"step {s} is {self.problem(s)}" for s in ordered)
            )
        newer = {s: self.problem(s) for s in ordered if chosen is None or s > chosen}
        newer.update({s: "incomplete (an unfinished save)" for s in unfinished if s not in newer})
        for step in sorted(newer, reverse=True):
            if chosen is not None and step > chosen and step not in self._noted:
                self._noted.add(step)
                note(f"checkpoint step {step} in {self.directory} is {newer[step]}; using step {chosen}")
        return chosen

    def pick(self, steps: Iterable[int], step: int | None, unfinished: Iterable[int] = ()) -> int:
        """`step` if it is intact, else a RunError listing the intact steps; None: the newest intact."""
        steps = sorted(steps)
        if step is None:
            chosen = self.latest(steps, unfinished)
            if chosen is None:
                raise RunError(f"no checkpoint in {self.directory}")
            return chosen
        if step in steps and self.problem(step) is None:
            return step
        intact = ", ".join(str(s) for s in steps if self.problem(s) is None) or "none"
        what = f"is {self.problem(step)}" if step in steps else "does not exist"
        raise RunError(f"checkpoint step {step} in {self.directory} {what}; intact steps: {intact}")


def cause(err: BaseException) -> str:
    """A few words on why a checkpoint file could not be read (the frameworks add their own cases)."""
    if isinstance(err, FileNotFoundError):
        name = "/".join(Path(err.filename).parts[-2:]) if err.filename else None
        return f"missing file {name}" if name else "a file is missing"
    if isinstance(err, PermissionError):
        return "permission denied"
    if isinstance(err, IsADirectoryError):
        return "a folder where a file should be"
    if isinstance(err, EOFError):
        return "truncated file"
    return " ".join(str(err).split())[:80] or type(err).__name__
