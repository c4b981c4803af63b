"""TensorBoard event files beside metrics.jsonl (`train --tensorboard`): one more sink of the same records.

The loop hands every record it writes to metrics.jsonl to `Board.write` too (through `Tee`), so both
frameworks log one tag set, written with tensorboardX into the run folder itself (`tensorboard
--logdir runs` shows each run under its folder name):

    train/<field>   each numeric field of a "step" record (metrics.STEP_KEYS), at the record's step
    epoch/<field>   each numeric field of an "epoch" record (metrics.EPOCH_KEYS), at the epoch's end step
    images/reconstruction, images/samples, images/manifold (2-D latents only): the grids of
                    images/*.png (plots.canvases) at each epoch end, one canvas pixel per image pixel

`kind`, `step` (the x-axis) and `epoch` (the record's position) are not plotted. TensorBoard stores a
scalar as float32; metrics.jsonl keeps the exact value and stays the record every tool reads. A
non-finite value (null in metrics.jsonl) is not written: the curve has a gap there.

A resumed run appends a new event file whose first events purge every step >= the resumed step from
the older files (SummaryWriter(purge_step=...)), then replays the records metrics.jsonl kept at that
step (runs.truncate_metrics), drawing that epoch end's images again from the restored state; so the
log shows each step once, as metrics.jsonl does. A run that had no event files gets its kept history
from metrics.jsonl (images only at the resumed step).
"""

from __future__ import annotations

import io
import math
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from jax_vae.common.errors import RunError, one_line
from jax_vae.common.runs import folder as runs

if TYPE_CHECKING:
    import numpy.typing as npt

EVENT_GLOB = "events.out.tfevents.*"
PREFIX = {"step": "train", "epoch": "epoch"}  # record kind -> tag prefix
NOT_PLOTTED = ("kind", "step", "epoch", "non_finite")
FLUSH_S = 10  # seconds
Draw = Callable[[], dict[str, np.ndarray]]  # -> {name: [H, W] canvas in [0, 1]}


def import_tensorboardx() -> ModuleType:
    """The tensorboardX module, imported on first use; missing, a one-line RunError. tensorboardX
    imports torch, when installed, only to name torch.Tensor in type hints (1.7 s of a JAX run's start,
    measured): a process that has not imported torch hides it during that import."""
    hide = "torch" not in sys.modules
    if hide:
        sys.modules["torch"] = None  # type: ignore[assignment]  # `import torch` raises ImportError
    try:
        import tensorboardX
        import tensorboardX.proto.summary_pb2
    except ImportError as err:
        raise RunError(
            f"--tensorboard needs tensorboardX ({one_line(err)}): pip install tensorboardX"
        ) from None
    finally:
        if hide:
            del sys.modules["torch"]
    module: ModuleType = tensorboardX
    return module


def event_files(run_dir: Path) -> list[Path]:
    """The run folder's TensorBoard event files, in the order TensorBoard reads them (by name)."""
    return sorted(Path(run_dir).glob(EVENT_GLOB))


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """{tag: value} of a metrics record: its finite numeric fields under PREFIX[kind]/<field>."""
    prefix = PREFIX.get(record.get("kind", ""))
    if prefix is None:
        return {}
    out = {}
    for key, value in record.items():
        if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
            value = value.item()  # a numpy scalar
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        if key not in NOT_PLOTTED and numeric and math.isfinite(value):
            out[f"{prefix}/{key}"] = float(value)
    return out


def to_uint8(canvas: np.ndarray) -> npt.NDArray[np.uint8]:
    """A [H, W] (or [H, W, 3]) canvas in [0, 1] -> uint8 levels of the same shape (rounded, as PNG stores
    them)."""
    return np.round(np.clip(np.asarray(canvas, np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)


def image_summary(tbx: ModuleType, tag: str, canvas: np.ndarray) -> Any:
    """A Summary holding `canvas` as a one-channel PNG, or an RGB one for an [H, W, 3] canvas
    (SummaryWriter.add_image writes RGB: twice the bytes of grey, measured on an untrained 2-D manifold)."""
    from PIL import Image

    pixels = to_uint8(canvas)  # [H, W] or [H, W, 3]
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    pb = tbx.proto.summary_pb2.Summary
    colorspace = 3 if pixels.ndim == 3 else 1
    image = pb.Image(
        height=pixels.shape[0],
        width=pixels.shape[1],
        colorspace=colorspace,
        encoded_image_string=buffer.getvalue(),
    )
    return pb(value=[pb.Value(tag=tag, image=image)])


class Board:
    """A SummaryWriter on the run folder fed with metrics records; `draw` (None: no images) gives the
    epoch-end grids. tensorboardX writes from a thread and flushes at most FLUSH_S seconds after an
    event, and on close."""

    def __init__(self, run_dir: Path, purge_step: int | None, draw: Draw | None) -> None:
        self._tbx = import_tensorboardx()
        # tensorboardX names a file by the second and host only: the index keeps a run resumed within
        # the same second from overwriting the file before it and sorts it after; the PID tells
        # processes apart.
        suffix = f".{len(event_files(run_dir)):03d}.{os.getpid()}"
        self.draw = draw
        self._writer = self._tbx.SummaryWriter(
            str(run_dir), purge_step=purge_step, flush_secs=FLUSH_S, filename_suffix=suffix
        )

    def write(self, records: Iterable[dict[str, Any]], images: bool = True) -> None:
        """The scalars of each record at its step; for an epoch record (with `images`), the grids."""
        for record in records:
            step = int(record["step"])
            for tag, value in scalars(record).items():
                self._writer.add_scalar(tag, value, step)
            if record.get("kind") == "epoch" and images and self.draw is not None:
                for name, canvas in self.draw().items():
                    summary = image_summary(self._tbx, f"images/{name}", canvas)
                    self._writer.file_writer.add_summary(summary, step)

    def close(self) -> None:
        self._writer.close()


def open_board(run_dir: Path, start: int, draw: Draw | None) -> Board:
    """The Board of a run starting (or resumed) at step `start`, once metrics.jsonl is cut back to it:
    earlier event files are purged from `start` on and the records kept at `start` replayed (with no
    event files yet, every kept record; images only for an epoch end at `start`)."""
    had_events = bool(event_files(run_dir))
    board = Board(run_dir, start if had_events else None, draw)
    try:
        has_metrics = (Path(run_dir) / runs.METRICS_FILE).is_file()
        kept = runs.read_metrics(run_dir) if start > 0 and has_metrics else []
        if not had_events:
            board.write([r for r in kept if r.get("step", 0) < start], images=False)
        board.write([r for r in kept if r.get("step") == start])
    except BaseException:
        board.close()
        raise
    return board


class Tee:
    """Writes each batch of records to metrics.jsonl first, then to TensorBoard; closes both."""

    def __init__(self, metrics: runs.RecordWriter, board: Board) -> None:
        self.metrics, self.board = metrics, board

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        records = list(records)
        self.metrics.write(records)
        self.board.write(records)

    def close(self) -> None:
        try:
            self.metrics.close()
        finally:
            self.board.close()
