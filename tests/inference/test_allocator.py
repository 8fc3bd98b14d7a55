"""Tile-sized buffers are mapped on their own (and so returned to the OS when freed)
once the mmap threshold is fixed, even after a larger block was freed."""

import platform
import subprocess
import sys

import pytest

from wsi_seg.inference.allocator import return_large_buffers

CHILD = """
import ctypes, sys
from wsi_seg.inference.allocator import return_large_buffers

libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.sbrk.restype, libc.sbrk.argtypes = ctypes.c_void_p, [ctypes.c_ssize_t]
fixed = return_large_buffers() if sys.argv[1] == "fixed" else False
libc.free(libc.malloc(24 << 20))    # freeing a mapped 24 MiB block raises glibc's dynamic threshold
block = libc.malloc(12 << 20)       # a tile-sized buffer
print(fixed, "heap" if block < libc.sbrk(0) else "mapped")
"""


def _child(mode: str) -> list[str]:
    return subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True,
                          check=True).stdout.split()


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="the setting exists in glibc only")
def test_tile_sized_buffers_are_mapped_with_the_fixed_threshold():
    assert _child("fixed") == ["True", "mapped"]
    # without it glibc serves the same request from the heap, where freed memory stays resident
    assert _child("dynamic") == ["False", "heap"]


def test_calling_twice_is_harmless():
    assert return_large_buffers() == return_large_buffers()
