"""Checks on the repository itself: namespace layout, hook docs and tests, entry points,
and the kernel's independence from feature code."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib.metadata import distributions
from pathlib import Path

from noa.kernel.hookdoc import hook_names, render

REPO = Path(__file__).resolve().parents[1]
CODE_FOLDERS = ("kernel", "plugin_sdk", "builtin_plugins", "examples")


def tracked(pattern: str) -> list[Path]:
    found: list[Path] = []
    for folder in CODE_FOLDERS:
        found += [p for p in (REPO / folder).rglob(pattern) if ".venv" not in p.parts]
    return found


def test_noa_is_a_namespace_package_everywhere() -> None:
    offenders = [p for p in tracked("__init__.py") if p.parent.name == "noa"]
    assert offenders == [], "noa/ must stay a PEP 420 namespace: delete these files"


def test_hook_reference_is_up_to_date() -> None:
    assert (REPO / "docs" / "hooks.md").read_text() == render(), (
        "regenerate: python -m noa.kernel.hookdoc > docs/hooks.md"
    )


def test_every_hook_has_a_test() -> None:
    folders = [REPO / "tests", *(REPO / folder for folder in CODE_FOLDERS)]
    sources = "\n".join(
        p.read_text()
        for folder in folders
        for p in folder.rglob("test_*.py")
        if ".venv" not in p.parts
    )
    untested = [name for name in hook_names() if name not in sources]
    assert untested == []


def test_every_entry_point_of_our_distributions_loads() -> None:
    checked = []
    for dist in distributions():
        if not dist.metadata["Name"].startswith("noa-"):
            continue
        for ep in dist.entry_points:
            if ep.group.startswith("noa.") or ep.group in ("console_scripts", "pytest11"):
                assert ep.load() is not None, f"{dist.metadata['Name']}: {ep}"
                checked.append(ep.name)
    assert {"http", "observability", "noa"} <= set(checked)


def test_kernel_source_imports_no_feature_code() -> None:
    pattern = re.compile(r"^\s*(from|import)\s+noa\.builtin_plugins", re.MULTILINE)
    offenders = [
        str(p.relative_to(REPO))
        for p in (REPO / "kernel" / "src").rglob("*.py")
        if pattern.search(p.read_text())
    ]
    assert offenders == []


def test_sdk_imports_nothing_from_the_kernel_at_import_time() -> None:
    probe = (
        "import sys, json, noa.plugin_sdk, noa.plugin_sdk.ports, noa.plugin_sdk.testing.contracts\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('noa.kernel', 'numpy', 'litestar')))))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_booting_without_plugins_imports_no_plugin(tmp_path: Path) -> None:
    probe = (
        "import sys, json\n"
        "from noa.kernel import Kernel, BootOptions\n"
        f"Kernel.boot(BootOptions(config_dir={str(tmp_path)!r}, "
        "overrides=(('plugins.autoload', False, 't'),)), environ={})\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('noa.builtin_plugins'))))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_every_config_key_is_documented() -> None:
    doc = (REPO / "docs" / "configuration.md").read_text()
    from noa.builtin_plugins.auth.config import AuthConfig
    from noa.builtin_plugins.broker.config import BrokerConfig
    from noa.builtin_plugins.cache.config import CacheConfig
    from noa.builtin_plugins.fastembed.config import FastembedConfig
    from noa.builtin_plugins.grpc.config import GrpcConfig
    from noa.builtin_plugins.http.config import HttpConfig
    from noa.builtin_plugins.inference.config import InferenceConfig
    from noa.builtin_plugins.observability.config import ObservabilityConfig
    from noa.builtin_plugins.orchestration.config import OrchestrationConfig
    from noa.builtin_plugins.retrieval.config import RetrievalConfig
    from noa.builtin_plugins.storage.config import StorageConfig
    from noa.builtin_plugins.streaming.config import StreamingConfig
    from noa.builtin_plugins.wasm.config import WasmConfig
    from noa.kernel.config._schema import PluginsSettings
    from noa.plugin_sdk.types import ServerSettings

    missing = []
    for section, kind in (
        ("server", ServerSettings),
        ("plugins", PluginsSettings),
        ("http", HttpConfig),
        ("observability", ObservabilityConfig),
        ("cache", CacheConfig),
        ("broker", BrokerConfig),
        ("storage", StorageConfig),
        ("inference", InferenceConfig),
        ("auth", AuthConfig),
        ("retrieval", RetrievalConfig),
        ("orchestration", OrchestrationConfig),
        ("fastembed", FastembedConfig),
        ("wasm", WasmConfig),
        ("grpc", GrpcConfig),
        ("streaming", StreamingConfig),
    ):
        missing += [
            f"{section}.{f}" for f in kind.__struct_fields__ if f"`{section}.{f}`" not in doc
        ]
    assert missing == [], "add these keys to docs/configuration.md"


def test_plugin_sdk_needs_only_light_dependencies() -> None:
    import tomllib

    project = tomllib.loads((REPO / "plugin_sdk" / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=\[ ]", dep)[0] for dep in project["dependencies"]}
    assert names == {"pluggy", "msgspec"}
