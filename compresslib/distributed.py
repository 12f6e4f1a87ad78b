"""Multi-process (DistributedDataParallel) helpers used by ``compresslib.train.fit``.

    torchrun --nproc_per_node 4 -m compresslib.workbook.reproduce --profile paper/ecc_mobilenet_imagenet ...

``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; ``init_from_env``
joins the process group (NCCL on CUDA, gloo on CPU) and every ``fit`` in that process then
trains a DDP-wrapped model. ``DistributedBatchSampler`` keeps the single-process semantics of
``batch_size``: it is the *global* batch. Every rank draws the same seeded permutation the
single-process loader draws (same generator, same number of draws per epoch) and takes its
contiguous slice of each global batch, so a W-process run with global batch B follows the
loss trajectory of a 1-process run with batch B (``tests/test_ddp.py``).

Exactness holds for BN-free models: BatchNorm layers see each rank's B/W-sample slice (set
$COMPRESSLIB_SYNC_BN=1 for SyncBatchNorm on CUDA). Loss terms a callback adds in ``on_loss`` are
averaged over ranks: exact for data-independent penalties (ADMM) and for per-sample means when the
ranks hold equal shares (every batch but an uneven last one).
"""

from __future__ import annotations

import os
from typing import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Subset


def env_world_size() -> int:
    """WORLD_SIZE set by torchrun (1 when absent)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_dist() -> bool:
    """True when a process group is initialised with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", rank()))


def is_main() -> bool:
    """Rank 0 (or a single process): the one that logs, checkpoints and writes metrics."""
    return rank() == 0


def init_from_env(backend: str | None = None) -> bool:
    """Join the process group described by torchrun's environment variables.

    Returns True when running distributed (WORLD_SIZE > 1). Idempotent: later calls reuse the
    group. On CUDA the process is bound to ``cuda:LOCAL_RANK``.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    if env_world_size() <= 1:
        return False
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(
            f"WORLD_SIZE={env_world_size()} but {', '.join(missing)} unset: "
            "launch with `torchrun --nproc_per_node N ...`"
        )
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend)
    return True


def device_for(device: str) -> str:
    """``cuda`` -> ``cuda:LOCAL_RANK`` under DDP; anything else unchanged."""
    return f"cuda:{local_rank()}" if str(device) == "cuda" and is_dist() else str(device)


def barrier() -> None:
    if is_dist():
        dist.barrier()


def _backend_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of a tensor over ranks (returned on the input's device; identity when single-process)."""
    if not is_dist():
        return t
    buf = t.detach().clone().to(_backend_device())
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.to(t.device)


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over ranks (e.g. callback statistics computed from local batches)."""
    return all_reduce_sum(t.float()) / world_size()


def all_reduce_scalars(*xs: float) -> list[float]:
    """Sum each python number over ranks in one float64 all-reduce."""
    t = all_reduce_sum(torch.tensor(xs, dtype=torch.float64))
    return t.tolist()


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s python object on every rank (e.g. a callback's ``state_dict``)."""
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def sync_callback_state(callbacks) -> None:
    """Make every rank's callback state equal rank 0's (``state_dict`` -> broadcast -> load)."""
    if not is_dist():
        return
    for cb in callbacks:
        st = broadcast_object(cb.state_dict())
        if not is_main():
            cb.load_state_dict(st)


class DistributedBatchSampler(torch.utils.data.Sampler):
    """Rank ``rank``'s contiguous slice of every global batch of one shared seeded order.

    ``sampler`` is the single-process loader's own index sampler (e.g. its ``RandomSampler`` with
    the seeded generator ``g``): it is iterated to exhaustion once per epoch on every rank, so the
    generator advances exactly as in the 1-process run (torch's RandomSampler draws a second,
    unused ``randperm`` when exhausted; replaying the sampler itself keeps that). Give the
    DataLoader the same ``generator`` so it also draws its per-iterator base seed from it.
    Global batch ``i`` is ``order[i*B:(i+1)*B]``, split into ``world`` near-equal contiguous
    chunks. A final partial batch smaller than ``world`` is dropped (it cannot feed every rank).
    """

    def __init__(self, sampler, batch_size: int, rank: int, world: int, drop_last: bool = False):
        if batch_size < world:
            raise ValueError(f"global batch size {batch_size} < world size {world}: every rank needs a sample")
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} not in [0, {world})")
        self.sampler, self.n = sampler, len(sampler)
        self.batch_size, self.rank, self.world, self.drop_last = batch_size, rank, world, drop_last

    def global_batch_sizes(self) -> list[int]:
        full, rest = divmod(self.n, self.batch_size)
        sizes = [self.batch_size] * full
        if rest and not self.drop_last and rest >= self.world:
            sizes.append(rest)
        return sizes

    def _chunk(self, batch: list[int]) -> list[int]:
        q, r = divmod(len(batch), self.world)
        lo = self.rank * q + min(self.rank, r)
        return batch[lo : lo + q + (self.rank < r)]

    def __iter__(self) -> Iterator[list[int]]:
        order = [int(i) for i in self.sampler]
        for i, size in enumerate(self.global_batch_sizes()):
            yield self._chunk(order[i * self.batch_size : i * self.batch_size + size])

    def __len__(self) -> int:
        return len(self.global_batch_sizes())


def num_workers(loader: DataLoader) -> int:
    """The loader's workers, or $COMPRESSLIB_NUM_WORKERS for loaders built with none."""
    env = os.environ.get("COMPRESSLIB_NUM_WORKERS")
    return int(env) if env and loader.num_workers == 0 else loader.num_workers


def distributed_loader(loader: DataLoader) -> DataLoader:
    """The loader ``fit`` trains on: under DDP each rank reads its slice of every global batch (same
    generator); with $COMPRESSLIB_NUM_WORKERS the same batches come from worker processes."""
    if isinstance(loader.batch_sampler, DistributedBatchSampler):
        return loader
    workers = num_workers(loader)
    if not is_dist() and workers == loader.num_workers:
        return loader
    if loader.batch_size is None:
        raise ValueError("distributed_loader needs a DataLoader built with batch_size=")
    gen = getattr(loader.sampler, "generator", None) or loader.generator
    extra = dict(
        num_workers=workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        worker_init_fn=loader.worker_init_fn,
    )  # not persistent: each epoch draws its base seed
    if not is_dist():  # same sampler and generator: the same batches in the same order
        return DataLoader(
            loader.dataset,
            batch_size=loader.batch_size,
            sampler=loader.sampler,
            drop_last=loader.drop_last,
            generator=gen,
            **extra,
        )
    bs = DistributedBatchSampler(loader.sampler, loader.batch_size, rank(), world_size(), drop_last=loader.drop_last)
    return DataLoader(loader.dataset, batch_sampler=bs, generator=gen, **extra)


def shard_loader(loader: DataLoader) -> DataLoader:
    """An evaluation loader over this rank's strided share (``rank::world``) of the dataset."""
    if not is_dist():
        return loader
    idx = list(range(rank(), len(loader.dataset), world_size()))
    return DataLoader(
        Subset(loader.dataset, idx),
        batch_size=loader.batch_size or 1,
        shuffle=False,
        num_workers=num_workers(loader),
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
    )


def wrap_model(model: torch.nn.Module, device: str):
    """DistributedDataParallel around ``model`` when distributed (else ``model`` itself)."""
    if not is_dist():
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    if os.environ.get("COMPRESSLIB_SYNC_BN") == "1":  # BN statistics over the global batch (CUDA)
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    dev = torch.device(device)
    ids = [dev.index if dev.index is not None else local_rank()] if dev.type == "cuda" else None
    find_unused = os.environ.get("COMPRESSLIB_DDP_FIND_UNUSED", "0") == "1"
    return DDP(model, device_ids=ids, find_unused_parameters=find_unused)


def all_gather_object(obj) -> list:
    """Every rank's python object, in rank order (``[obj]`` when single-process)."""
    if not is_dist():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out
