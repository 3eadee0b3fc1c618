"""The gRPC modules the noa-proto build generates: present, importable, made from the
``.proto`` sources as they are now, and wire-compatible with tritonclient's KServe v2."""

from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
PROTO = REPO / "proto"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("noa_proto_generate", PROTO / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_source_has_generated_modules_that_import() -> None:
    gen = generator()
    sources = gen.sources(PROTO)
    assert {str(s) for s in sources} >= {
        "noa/v1/inference.proto",
        "noa/v1/retrieval.proto",
        "noa/v1/orchestration.proto",
        "kserve/v2/grpc_predict_v2.proto",
    }
    for source in sources:
        dotted = ".".join(gen.staged_path(source).with_suffix("").parts)
        messages = importlib.import_module(dotted + "_pb2")
        services = importlib.import_module(dotted + "_pb2_grpc")
        assert messages.DESCRIPTOR.name == str(gen.staged_path(source))
        for service in messages.DESCRIPTOR.services_by_name.values():
            assert hasattr(services, f"add_{service.name}Servicer_to_server")


def test_the_installed_modules_match_a_fresh_build_of_the_sources(tmp_path: Path) -> None:
    gen = generator()
    gen.generate(PROTO, tmp_path)
    built = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.suffix in (".py", ".pyi")}
    installed = PROTO / gen.PACKAGE
    stale = [
        str(p)
        for p in sorted(built)
        if p != Path("__init__.py")
        and (
            not (installed / p).is_file()
            or (installed / p).read_bytes() != (tmp_path / p).read_bytes()
        )
    ]
    assert stale == [], "the generated modules are stale: run `uv sync` (or ./scripts/setup)"


def test_the_kserve_messages_match_tritonclients_field_for_field() -> None:
    """Names, numbers and types of every field tritonclient's own stubs have for the
    messages NOA defines (read in a child: both define the ``inference`` package)."""
    probe = """
import json, sys, importlib
module = importlib.import_module(sys.argv[1])
def fields(d, prefix=""):
    out = {}
    for f in d.fields:
        out[prefix + d.name + "." + f.name] = [f.number, f.type, f.label if hasattr(f, "label") else 0]
    for nested in d.nested_types:
        out.update(fields(nested, prefix + d.name + "."))
    return out
found = {}
for name, d in module.DESCRIPTOR.message_types_by_name.items():
    found.update(fields(d))
methods = {m.name: [m.input_type.full_name, m.output_type.full_name]
           for m in module.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods}
print(json.dumps({"fields": found, "methods": methods}))
"""

    def read(module: str) -> dict[str, dict[str, list[object]]]:
        out = subprocess.run(
            [sys.executable, "-c", probe, module], capture_output=True, text=True, check=True
        )
        return dict(json.loads(out.stdout))

    ours = read("noa.proto.kserve.v2.grpc_predict_v2_pb2")
    triton = read("tritonclient.grpc.service_pb2")
    assert ours["fields"], "no fields read"
    differing = {
        name: (spec, triton["fields"].get(name))
        for name, spec in ours["fields"].items()
        if triton["fields"].get(name) != spec
    }
    assert differing == {}
    assert {m: triton["methods"].get(m) for m in ours["methods"]} == ours["methods"]
