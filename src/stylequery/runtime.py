"""Device choice, mixed precision, seeding, distributed set-up and logging."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stylequery.config import Precision
from stylequery.errors import StyleQueryError

logger = logging.getLogger(__name__)


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Turn ``auto|cpu|cuda|cuda:N|N|mps`` into a device (``N`` is ``cuda:N``); a torch
    device is returned as is.

    ``auto`` picks cuda, then mps, then cpu.
    """
    if isinstance(name, torch.device):
        return name
    name = name.strip()
    if name.isdigit():
        name = f"cuda:{name}"
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise StyleQueryError(
            f"unknown device '{name}': use auto, cpu, cuda, cuda:N, N or mps"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise StyleQueryError(f"device '{name}' asked for, but CUDA is not available here")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise StyleQueryError(f"device '{name}': only {torch.cuda.device_count()} GPU(s) here")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise StyleQueryError(f"device '{name}' asked for, but MPS is not available here")
    return device


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX; Linux flags only)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(device: torch.device, precision: Precision) -> Precision:
    """``auto`` -> ``bf16`` where the hardware runs it natively (a CPU with AVX-512 BF16 or
    AMX, a CUDA GPU from Ampere on), else ``fp32``; any other value is returned as is."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.get_device_capability(device)[0] >= 8 else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """Autocast context for ``bf16``/``fp16`` (``auto`` resolved by :func:`resolve_precision`);
    a no-op for fp32 (and fp16 off CUDA)."""
    if precision == "auto":
        precision = resolve_precision(device, "auto")
    if precision == "bf16" and device.type in ("cuda", "cpu"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if precision == "fp16" and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def check_precision(device: torch.device, precision: str) -> None:
    """Refuse precision/device combinations that would silently do something else."""
    if precision == "fp16" and device.type != "cuda":
        raise StyleQueryError("train.precision=fp16 needs CUDA; use bf16 or fp32 on this device")
    if precision == "bf16" and device.type == "mps":
        raise StyleQueryError("train.precision=bf16 is not supported on mps; use fp32")


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) dict/list/tuple batch to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=device.type == "cuda")
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


# Distributed: torchrun sets RANK/WORLD_SIZE/LOCAL_RANK. The CLI reads them and passes the
# result down; library code only calls the helpers below.


def distributed_env() -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` from torchrun's environment, or None when not set."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    return (
        int(os.environ["RANK"]),
        int(os.environ["WORLD_SIZE"]),
        int(os.environ.get("LOCAL_RANK", "0")),
    )


def init_distributed(device: torch.device) -> None:
    """Start the process group: nccl on CUDA, gloo otherwise."""
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


@contextlib.contextmanager
def process_group(device_name: str = "auto") -> Iterator[torch.device]:
    """The device this process works on; under torchrun, inside a started process group.

    Under torchrun each process takes ``cuda:LOCAL_RANK`` (when the device is CUDA), joins the
    group for the block and leaves it afterwards; only rank 0 logs below warnings.
    """
    device = resolve_device(device_name)
    env = distributed_env()
    if env is None:
        yield device
        return
    if device.type == "cuda":
        device = resolve_device(f"cuda:{env[2]}")
    init_distributed(device)
    if not is_main_process():
        logging.getLogger("stylequery").setLevel(logging.WARNING)
    try:
        yield device
    finally:
        import torch.distributed as dist

        dist.destroy_process_group()


def is_distributed() -> bool:
    """True inside an initialised process group (torchrun), even with a single process."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return rank() == 0


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm statistics) to every rank, so all ranks hold one model."""
    import torch.distributed as dist

    if world_size() > 1:
        for buffer in module.buffers():
            dist.broadcast(buffer.data, src=0)


def setup_logging(verbose: bool = False) -> None:
    """Configure logging once for the CLI: Rich lines on stderr (stdout is for results)."""
    from rich.console import Console
    from rich.logging import RichHandler

    level = logging.DEBUG if verbose else logging.INFO
    handler = RichHandler(
        console=Console(stderr=True),
        show_path=False,
        show_time=False,
        markup=False,
        rich_tracebacks=False,
    )
    root = logging.getLogger("stylequery")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    if not is_main_process():
        root.setLevel(logging.WARNING)
