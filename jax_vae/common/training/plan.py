"""Framework-free training plan: steps per epoch, the data order, the chunks a run runs in, RNG streams.

Everything here is a pure function of (config, dataset size, global step), so a run resumed from a
checkpoint at step k replays exactly the chunks, batches and data order of an uninterrupted run.
Both `jax_vae.trainer` and `torch_reference.trainer` use it, so both frameworks see the same batches.

RNG streams: each framework derives its init, eps, evaluation and binarization randomness from the
run seed and one `Stream` number (JAX: fold_in(key(seed), stream); PyTorch: a generator seeded
derive_seed(seed, stream)), so the two sides name the same four streams.

Data order: epoch e visits the training set in the permutation
    epoch_order(seed, e, n) = numpy Generator(SeedSequence([seed, DATA_ORDER_KEY, e])).permutation(n).
Chunks: the steps of a run are cut at every epoch end, every `checkpoint_every` steps (global),
every `chunk_steps` steps (global), before the epoch's last, smaller batch (it has its own shape),
and at the last step; a chunk is one jitted `lax.scan` on the JAX side.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import numpy.typing as npt

DATA_ORDER_KEY = 0x0DA7A  # domain separation for the data-order seed sequence


class Stream(enum.IntEnum):
    """The run's independent random streams, numbered the same in both frameworks."""

    INIT = 0  # parameter initialization (JAX; PyTorch seeds its init with the run seed itself)
    EPS = 1  # the reparameterization noise of every training step
    EVAL = 2  # the noise of the per-epoch test loss
    BINARIZE = 3  # dynamic binarization, one draw per epoch


@dataclasses.dataclass(frozen=True)
class Layout:
    """How one epoch of n examples splits into batches."""

    n: int
    batch_size: int
    drop_last: bool

    @property
    def full_batches(self) -> int:
        return self.n // self.batch_size

    @property
    def last_batch_size(self) -> int:
        """Size of the trailing partial batch (0 when there is none or it is dropped)."""
        return 0 if self.drop_last else self.n % self.batch_size

    @property
    def steps_per_epoch(self) -> int:
        return self.full_batches + (1 if self.last_batch_size else 0)

    def images_in_epoch(self) -> int:
        return self.full_batches * self.batch_size + self.last_batch_size


@dataclasses.dataclass(frozen=True)
class Chunk:
    """Steps [start, start + num_steps) of the run, all inside one epoch and of one batch size."""

    epoch: int  # 0-based
    start: int  # global step count before the chunk's first update
    first_batch: int  # index of the first batch within the epoch
    offset: int  # position in the epoch's order of the chunk's first example
    num_steps: int
    batch_size: int
    epoch_end: bool  # the chunk ends an epoch (or the run): evaluate after it
    checkpoint: bool  # save a checkpoint after it

    @property
    def end(self) -> int:
        return self.start + self.num_steps


def total_steps(layout: Layout, epochs: int, steps: int) -> int:
    """`steps` when positive, else epochs * steps_per_epoch."""
    return steps if steps > 0 else epochs * layout.steps_per_epoch


def iwae_lr_boundaries(steps_per_epoch: int, stages: int = 8) -> list[int]:
    """Burda et al.'s learning-rate stages: stage i lasts 3**i epochs; the global steps where stages
    1..stages-1 begin (lr * 10**(-i/7) from the i-th boundary on)."""
    boundaries, epoch = [], 0
    for i in range(1, stages):
        epoch += 3 ** (i - 1)
        boundaries.append(epoch * steps_per_epoch)
    return boundaries


def epoch_order(seed: int, epoch: int, n: int) -> npt.NDArray[np.int32]:
    """The permutation of range(n) that epoch `epoch` visits: int32 [n]."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, DATA_ORDER_KEY, epoch]))
    return rng.permutation(n).astype(np.int32)


def chunk_indices(order: np.ndarray, chunk: Chunk) -> np.ndarray:
    """Example indices of the chunk's batches: int32 [num_steps, batch_size]."""
    lo = chunk.offset
    return order[lo : lo + chunk.num_steps * chunk.batch_size].reshape(chunk.num_steps, chunk.batch_size)


def chunks(
    layout: Layout, start: int, total: int, checkpoint_every: int = 0, chunk_steps: int = 0
) -> Iterator[Chunk]:
    """The chunks that take the run from global step `start` to `total`."""
    if layout.steps_per_epoch <= 0:
        raise ValueError(f"no full batch: {layout.n} examples, batch size {layout.batch_size}, drop_last")
    spe, full = layout.steps_per_epoch, layout.full_batches
    step = start
    while step < total:
        epoch, batch = divmod(step, spe)
        if batch < full:
            end = min(epoch * spe + full, total)
            for every in (checkpoint_every, chunk_steps):
                if every > 0:
                    end = min(end, (step // every + 1) * every)
            size = layout.batch_size
        else:
            end, size = step + 1, layout.last_batch_size
        epoch_end = end % spe == 0 or end == total
        save = epoch_end or (checkpoint_every > 0 and end % checkpoint_every == 0)
        yield Chunk(epoch, step, batch, batch * layout.batch_size, end - step, size, epoch_end, save)
        step = end
