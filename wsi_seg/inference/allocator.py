"""Give large freed buffers back to the operating system during ONNX prediction.

Prediction allocates and frees the same few large buffers for every tile (read
windows, probabilities, onnxruntime's block for one run's activations). glibc's
malloc serves blocks above its mmap threshold with ``mmap`` and unmaps them when
freed, but it raises that threshold to the size of each such block freed (up to
32 MiB on 64-bit), after which tile-sized buffers come from the heap, where
freed memory stays counted in the process's resident set and fragments. Fixing
the threshold turns that adjustment off: every buffer of 256 KiB or more is
mapped on allocation and returned on free, so the resident set follows what is
live. The ONNX backend on the CPU sets it when it is built: on a 12000x10000
slide (tile 1024, batch 2, ``benchmarks/predict_vs_monai.py``) the peak fell
from 727 to 598 MiB at the same speed. The PyTorch backend does not: its many
per-layer allocations would then each be mapped and zero-filled anew (1148 ->
916 MiB but 27 -> 36 s). Nothing changes on other C libraries.
"""

from __future__ import annotations

import ctypes
import platform

#: glibc's mallopt parameter number for the mmap threshold (malloc.h: M_MMAP_THRESHOLD).
_M_MMAP_THRESHOLD = -3
#: Blocks at least this large are mapped and unmapped by themselves.
MMAP_THRESHOLD = 256 * 1024

_done = False


def return_large_buffers() -> bool:
    """Fix glibc's mmap threshold at :data:`MMAP_THRESHOLD` for this process (once).

    Returns True when the setting is in force (glibc), False elsewhere."""
    global _done
    if _done:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):
        return False
    _done = ok
    return ok
