"""Compiles the ``.proto`` sources of this folder into the ``noa.proto`` package.

protoc names a generated module after the source's path, so each source is compiled from
a staging copy laid out under ``noa/proto/``: ``noa/v1/inference.proto`` becomes
``noa.proto.v1.inference_pb2`` and ``kserve/v2/grpc_predict_v2.proto`` becomes
``noa.proto.kserve.v2.grpc_predict_v2_pb2`` (nothing lands under a generic top-level
name such as ``inference``). Sources may import the well-known types
(``google/protobuf/...``) but not each other.

For each source three modules come out: ``*_pb2`` (messages), ``*_pb2.pyi`` (their
types) and ``*_pb2_grpc`` (servicer base class, ``add_*_to_server``, client stub).
Used by the build hook (``hatch_build.py``) and by the test that checks the installed
modules against the sources; it needs ``grpcio-tools``, nothing of hatch.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

PACKAGE = Path("src") / "noa" / "proto"
GENERATED = "Generated from proto/ by the noa-proto build: do not edit."
SKIP = frozenset({"src", "build", "dist", ".venv", "tests"})


def sources(root: Path) -> list[Path]:
    """The ``.proto`` files under ``root``, relative to it, in a stable order."""
    found = [
        p.relative_to(root)
        for p in root.rglob("*.proto")
        if not SKIP.intersection(p.relative_to(root).parts)
    ]
    return sorted(found)


def staged_path(source: Path) -> Path:
    """Where a source sits for protoc: ``noa/v1/x.proto`` -> ``noa/proto/v1/x.proto``."""
    parts = source.parts[1:] if source.parts[0] == "noa" else source.parts
    return Path("noa", "proto", *parts)


def generate(root: Path, out: Path) -> list[Path]:
    """Compile every source under ``root`` into the ``noa.proto`` package at ``out``
    (replacing what was there); return the files written, relative to ``out``."""
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory(prefix="noa-proto-") as tmp:
        stage, built = Path(tmp, "stage"), Path(tmp, "out")
        built.mkdir()
        staged = []
        for source in sources(root):
            target = stage / staged_path(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / source, target)
            staged.append(str(staged_path(source)))
        args = [
            "protoc",
            f"-I{stage}",
            f"-I{well_known}",
            f"--python_out={built}",
            f"--pyi_out={built}",
            f"--grpc_python_out={built}",
            *staged,
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {', '.join(staged)} (its message is above)")
        generated = built / "noa" / "proto"
        packages = {p.parent for p in generated.rglob("*.py")}
        packages |= {parent for folder in packages for parent in folder.parents}
        for folder in sorted(p for p in packages if generated in p.parents):
            init = folder / "__init__.py"
            if not init.exists():
                init.write_text(f'"""{GENERATED}"""\n')
        # Bring ``out`` in line: stale files go, changed ones are written, unchanged ones
        # are left alone (their mtimes are the install's cache key: see pyproject.toml).
        out.mkdir(parents=True, exist_ok=True)
        fresh = {p.relative_to(generated) for p in generated.rglob("*") if p.is_file()}
        for old in sorted(out.rglob("*"), reverse=True):
            relative = old.relative_to(out)
            if relative.parts[0] == "__pycache__" or len(relative.parts) == 1:
                continue  # the package's own __init__.py, committed
            if old.is_file() and relative not in fresh and old.suffix != ".pyc":
                old.unlink()
            elif old.is_dir() and not any(old.iterdir()):
                old.rmdir()
        written = []
        for relative in sorted(fresh):
            target = out / relative
            data = (generated / relative).read_bytes()
            if not target.is_file() or target.read_bytes() != data:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            written.append(relative)
        return written
