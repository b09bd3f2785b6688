"""Which samples each rank and worker streams in an epoch, and in what order: pure functions.

The plan of an epoch depends on ``(seed, epoch)``, the shard sizes and the number of
streams (processes x data-loader workers), nothing else:

1. **Shard order.** The shards are permuted by ``(seed, epoch)`` (or kept in stored order).
2. **Spans.** The permuted shards are laid end to end, a virtual sequence of all N
   samples, and cut into as many contiguous spans as there are streams; span sizes differ
   by at most one. A span covers whole shards and, at its ends, parts of shards: shards
   are split between streams, and when there are fewer shards than streams so are the
   samples of a shard. Every sample is in exactly one span.
3. **Even batches** (training, ``drop_last``): every span is cut to the same multiple of
   the batch size, so every rank yields the same number of batches per epoch (DDP needs
   it) and every worker's batches are full. The samples cut off are the ends of the
   spans, which move with the shard order: other samples every epoch.
4. **Shuffle buffer.** Each stream reads its span in order and emits through a buffer of
   ``buffer`` samples: after each read it emits a random element of the full buffer. The
   emission order is computed here, on positions, from ``(seed, epoch, rank, worker)``.

Because the order is computed before anything is read, a stream can start after its
first ``c`` emissions without decoding them: the samples in its buffer at that point and
the rest of its span are what remain (:func:`resume_reads`). A data loader takes batches
from its workers in turn; :func:`consumed_batches` tells how many of the loader's first
batches were each worker's, and which worker's turn came next.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Segment",
    "buffer_order",
    "consumed_batches",
    "even_span",
    "resume_reads",
    "shard_order",
    "span_segments",
    "stream_rng",
]

_SHARD_ORDER, _BUFFER = 0x5348, 0x4255  # stream tags, so the two never share random numbers


@dataclass(frozen=True)
class Segment:
    """Samples ``start:stop`` of shard ``shard`` (its position in the index), read in order."""

    shard: int
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


def shard_order(count: int, seed: int, epoch: int, shuffle: bool) -> list[int]:
    """The order in which the shards are laid end to end in ``epoch``."""
    if not shuffle:
        return list(range(count))
    rng = np.random.default_rng(np.random.SeedSequence([seed, epoch, _SHARD_ORDER]))
    return [int(i) for i in rng.permutation(count)]


def span_bounds(total: int, streams: int, stream: int) -> tuple[int, int]:
    """``[start, stop)`` of stream ``stream``'s span in the virtual sequence of ``total`` samples."""
    return total * stream // streams, total * (stream + 1) // streams


def even_span(total: int, streams: int, batch_size: int) -> int:
    """Samples each stream keeps with even batches: the smallest span, cut to whole batches."""
    return (total // streams) // batch_size * batch_size


def span_segments(
    sizes: Sequence[int], order: Sequence[int], start: int, stop: int
) -> list[Segment]:
    """The pieces of shards that positions ``[start, stop)`` of the laid-out sequence cover."""
    segments: list[Segment] = []
    offset = 0
    for shard in order:
        size = sizes[shard]
        lo, hi = max(start, offset), min(stop, offset + size)
        if lo < hi:
            segments.append(Segment(shard, lo - offset, hi - offset))
        offset += size
        if offset >= stop:
            break
    return segments


def stream_rng(seed: int, epoch: int, rank: int, worker: int) -> np.random.Generator:
    """The shuffle buffer's generator: a function of (seed, epoch, rank, worker) only."""
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, rank, worker, _BUFFER]))


def buffer_order(count: int, buffer: int, rng: np.random.Generator) -> np.ndarray:
    """The order (positions ``0..count-1``) in which a shuffle buffer emits ``count`` reads.

    After each read, once the buffer holds ``buffer`` elements, one of them, drawn
    uniformly, is emitted; at the end of the input the rest is emitted the same way.
    ``buffer`` <= 1 emits in read order.
    """
    if buffer <= 1 or count <= 1:
        return np.arange(count, dtype=np.int64)
    draws = rng.random(count)
    held: list[int] = []
    out = np.empty(count, dtype=np.int64)
    emitted = 0
    for position in range(count):
        held.append(position)
        if len(held) >= buffer:
            out[emitted] = _take(held, draws[emitted])
            emitted += 1
    while held:
        out[emitted] = _take(held, draws[emitted])
        emitted += 1
    return out


def _take(held: list[int], draw: float) -> int:
    """Remove and return the element at ``draw`` (in [0, 1)) of ``held``, in O(1)."""
    j = int(draw * len(held))
    held[j], held[-1] = held[-1], held[j]
    return held.pop()


def resume_reads(order: np.ndarray, buffer: int, emitted: int) -> list[int]:
    """Read positions still needed after the first ``emitted`` emissions of ``order``.

    First the samples that were in the buffer at that point (read before, not emitted
    yet), in read order; then the rest of the input. Reading these and emitting
    ``order[emitted:]`` continues the stream exactly, with at most ``buffer`` samples held.
    """
    count = len(order)
    if emitted <= 0:
        return list(range(count))
    # Emission k (from 1) follows read buffer + k - 1 (read k without a buffer).
    read = min(count, emitted if buffer <= 1 else buffer + emitted - 1)
    held = np.setdiff1d(np.arange(read), order[:emitted], assume_unique=True)
    return [int(p) for p in held] + list(range(read, count))


def consumed_batches(batches: Sequence[int], total: int) -> tuple[list[int], int]:
    """How many of each worker's batches are among a loader's first ``total``, and whose turn is next.

    A ``torch.utils.data.DataLoader`` over an iterable data set takes one batch from each
    worker in turn (worker 0, 1, ..., 0, 1, ...), skipping workers that have no batch
    left. ``batches[w]`` is worker ``w``'s number of batches in the epoch. A new loader
    starts its turns at worker 0: for it to continue the epoch, its worker ``s`` must
    stream what worker ``(s + next) % workers`` streamed, which keeps the turns' cycle.
    """
    counts = [0] * len(batches)
    remaining, round_, following = total, 0, 0
    while remaining > 0:
        active = [w for w, n in enumerate(batches) if n > round_]
        if not active:
            break
        for w in active[:remaining]:
            counts[w] += 1
            following = (w + 1) % len(batches)
        remaining -= min(remaining, len(active))
        round_ += 1
    return counts, following
