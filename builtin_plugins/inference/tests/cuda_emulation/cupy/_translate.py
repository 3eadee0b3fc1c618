"""CUDA C kernels to a CPU shared library: parse the signatures, wrap, compile with g++.

The source is compiled unchanged as C++ after :file:`_runtime.hpp`, which defines the
CUDA built-ins the kernels use (``threadIdx``, ``__syncthreads()``, ...). Two rewrites
only: ``extern __shared__ T name[];`` becomes a pointer to the block's dynamic shared
memory, and each ``extern "C" __global__`` kernel gets a C launcher taking the grid, the
block, the shared memory size and the schedule before the kernel's own parameters.

A ``#line`` directive keeps line numbers (in g++'s errors and in the runtime's barrier
messages) those of the kernel source. Libraries are cached by a hash of everything that
goes into them, in ``$NOA_CUDA_EMULATION_CACHE`` or a per-user temporary folder.

Anything the runtime does not define (warp shuffles, atomics, ``__ldg``, half types,
``#include <cuda_fp16.h>``...) fails to compile, with g++'s message saying which.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import hashlib
import os
import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["CompileException", "Param", "compile_kernels", "parse_kernels"]

RUNTIME = Path(__file__).with_name("_runtime.hpp")
COMPILER = os.environ.get("NOA_CUDA_EMULATION_CXX", "g++")
# _FORTIFY_SOURCE (on by default in some distributions' g++) rejects the longjmp between
# fiber stacks that the runtime's barriers are made of.
FLAGS = ("-std=c++17", "-O2", "-shared", "-fPIC", "-U_FORTIFY_SOURCE", "-fno-fast-math")

#: C scalar types a kernel parameter may have, as NumPy types.
SCALARS: dict[str, type[np.generic]] = {
    "float": np.float32,
    "double": np.float64,
    "int": np.int32,
    "unsigned int": np.uint32,
    "unsigned": np.uint32,
    "long long": np.int64,
    "long long int": np.int64,
    "unsigned long long": np.uint64,
}

_KERNEL = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)')
_EXTERN_SHARED = re.compile(r"extern\s+__shared__\s+(\w+)\s+(\w+)\s*\[\s*\]\s*;")


class CompileException(Exception):  # CuPy's name (cupy.cuda.compiler)
    """g++ refused the kernels: its output says why."""


@dataclasses.dataclass(frozen=True)
class Param:
    """One kernel parameter: ``const float* x`` is ``Param("x", "float", True, True)``."""

    name: str
    ctype: str
    pointer: bool
    const: bool

    @property
    def numpy_type(self) -> type[np.generic]:
        return SCALARS[self.ctype]

    def __str__(self) -> str:
        const = "const " if self.const else ""
        return f"{const}{self.ctype}{'*' if self.pointer else ''} {self.name}"


def _param(kernel: str, text: str) -> Param:
    words = text.replace("*", " * ").split()
    const = "const" in words
    pointers = words.count("*")
    words = [w for w in words if w not in ("const", "__restrict__", "*")]
    if len(words) < 2 or pointers > 1:
        raise CompileException(f"{kernel}: cannot emulate the parameter {text.strip()!r}")
    ctype, name = " ".join(words[:-1]), words[-1]
    if ctype not in SCALARS:
        raise CompileException(f"{kernel}: the emulator has no type {ctype!r} ({text.strip()!r})")
    return Param(name, ctype, pointers == 1, const)


def parse_kernels(code: str) -> dict[str, tuple[Param, ...]]:
    """Every ``extern "C" __global__`` kernel of ``code`` and its parameters."""
    kernels = {}
    for name, params in _KERNEL.findall(code):
        parts = [p for p in params.split(",") if p.strip()]
        kernels[name] = tuple(_param(name, p) for p in parts)
    return kernels


def _launcher(name: str, params: tuple[Param, ...]) -> str:
    decl = "".join(f", {'void*' if p.pointer else p.ctype} a{i}" for i, p in enumerate(params))
    call = ", ".join(f"({p.ctype}*)a{i}" if p.pointer else f"a{i}" for i, p in enumerate(params))
    return (
        f'extern "C" int noa_emu_launch_{name}(unsigned gx, unsigned gy, unsigned gz, '
        f"unsigned bx, unsigned by, unsigned bz, unsigned long shared, int descending{decl}) {{\n"
        f"    return noa_emu::run([&] {{ {name}({call}); }}, dim3{{gx, gy, gz}}, "
        "dim3{bx, by, bz}, shared, descending);\n}\n"
    )


def translate(code: str, kernels: dict[str, tuple[Param, ...]]) -> str:
    """The C++ translation unit: runtime, kernels (line numbers kept), launchers."""
    body = _EXTERN_SHARED.sub(r"\1* \2 = (\1*)noa_emu::shared_memory;", code)
    launchers = "".join(_launcher(name, params) for name, params in kernels.items())
    return (
        f'#include "{RUNTIME.name}"\n#line 1 "kernels.cu"\n{body}\n'
        f'#line 1 "emulator-launchers"\n{launchers}'
    )


def _cache_dir() -> Path:
    configured = os.environ.get("NOA_CUDA_EMULATION_CACHE")
    folder = (
        Path(configured)
        if configured
        else Path(tempfile.gettempdir()) / f"noa-cuda-emulation-{os.getuid()}"
    )
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@functools.cache
def _compiler_version() -> str:
    try:
        done = subprocess.run([COMPILER, "--version"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise CompileException(f"the emulator needs a C++ compiler ({COMPILER}): {exc}") from exc
    return done.stdout


_LOADED: dict[str, ctypes.CDLL] = {}


def compile_kernels(code: str, kernels: dict[str, tuple[Param, ...]]) -> ctypes.CDLL:
    """The kernels as a loaded library, compiled on first use and cached on disk."""
    source = translate(code, kernels)
    key = "\n".join((source, RUNTIME.read_text(), " ".join(FLAGS), _compiler_version()))
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    if digest in _LOADED:
        return _LOADED[digest]
    folder = _cache_dir()
    library = folder / f"kernels-{digest}.so"
    if not library.exists():
        cpp = folder / f"kernels-{digest}.cpp"
        cpp.write_text(source)
        partial = folder / f"kernels-{digest}.{os.getpid()}.so"
        command = [COMPILER, *FLAGS, f"-I{RUNTIME.parent}", str(cpp), "-o", str(partial)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            raise CompileException(
                f"g++ could not compile the kernels for the CPU emulator:\n{done.stderr}"
            )
        os.replace(partial, library)  # atomic: a concurrent run sees all of it or none
    _LOADED[digest] = ctypes.CDLL(str(library))
    return _LOADED[digest]
