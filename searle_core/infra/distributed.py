"""One process or many: the few torch.distributed calls the runs need, as for a world of one without ``torchrun``
(then :func:`setup` joins the process group, NCCL on GPUs or gloo on CPU, and gives each process its GPU)."""

from __future__ import annotations

import datetime
import os
from typing import Any

import torch
import torch.distributed as dist

from searle_core.infra.device import resolve_device

# OTI batches are long (minutes): waiting ranks must not time out while rank 0 merges or extracts.
_TIMEOUT = datetime.timedelta(hours=2)
# Whether setup() created the process group (then teardown() destroys it; a caller's group is left alone).
_OWN_GROUP = False


def setup(device: str | torch.device = "auto") -> torch.device:
    """Join the process group if torchrun started more than one process, and return this process's
    device (under torchrun ``cuda``/``auto`` becomes ``cuda:LOCAL_RANK``)."""
    dev = resolve_device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return dev
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) if dev.index is None else dev.index)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        global _OWN_GROUP
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=_TIMEOUT, **({"device_id": dev} if dev.type == "cuda" else {}))
        _OWN_GROUP = True
    return dev


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def broadcast_object(obj: Any) -> Any:
    """``obj`` from rank 0 on every rank (pickled)."""
    if not active():
        return obj
    box = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not active():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_objects(obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` in rank order on rank 0; ``None`` elsewhere."""
    if not active():
        return [obj]
    out: list[Any] | None = [None] * world_size() if is_main() else None
    dist.gather_object(obj, out, dst=0)
    return out


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """Sum of a tensor over ranks (in place, returned)."""
    if active():
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def shard_indices(n: int, rank_: int | None = None, world: int | None = None) -> list[int]:
    """Round-robin share of ``range(n)`` for a rank: every rank gets early and late batches, so a resumed
    run (whose early batches are done) keeps all ranks busy."""
    return list(range(rank() if rank_ is None else rank_, n, world_size() if world is None else world))


def split_evenly(items: list, rank_: int, world: int) -> list:
    """The rank's contiguous part of ``items`` (sizes differ by at most one)."""
    base, extra = divmod(len(items), world)
    start = rank_ * base + min(rank_, extra)
    return items[start : start + base + (rank_ < extra)]


def teardown() -> None:
    """Leave the process group that :func:`setup` joined (one created by the caller stays)."""
    global _OWN_GROUP
    if _OWN_GROUP and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _OWN_GROUP = False
