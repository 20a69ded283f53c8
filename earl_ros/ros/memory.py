"""Give memory back after the models are dropped (lifecycle cleanup), so RSS and GPU memory fall.

Dropping the last reference frees the tensors, but glibc keeps freed heap pages mapped and torch's
CUDA allocator keeps its cache: without the two calls below, a cleaned-up node would look as large
as a configured one to the robot's process monitor.
"""
from __future__ import annotations

import ctypes
import gc
import sys


def release_freed_memory() -> None:
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl, macOS): the allocator keeps its pages
        pass
