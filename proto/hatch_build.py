"""The build hook of noa-proto: generates ``noa.proto`` from the ``.proto`` sources on
every build (see ``generate.py``).

The modules are written to ``src/noa/proto/`` (git ignores them); a wheel gets them
through ``force_include``, an editable install finds them in place.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location(
        "noa_proto_generate", Path(__file__).with_name("generate.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ProtoStubs(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        generator = _generator()
        root = Path(self.root)
        package = root / generator.PACKAGE
        written = generator.generate(root, package)
        if version != "editable":
            for relative in written:
                target = str(Path("noa", "proto", relative))
                build_data["force_include"][str(package / relative)] = target
