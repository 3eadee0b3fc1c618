"""``noa fastembed``: tools for the fastembed embedder's model folders."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from noa.builtin_plugins.fastembed.convert import ConversionError, convert, is_fresh

__all__ = ["fastembed"]


@click.group("fastembed")
def fastembed() -> None:
    """Model folders for the fastembed embedder ([fastembed.models])."""


@fastembed.command("convert")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--if-stale", is_flag=True, help="Do nothing when OUT is newer than every file it comes from."
)
def convert_command(source: Path, out: Path, if_stale: bool) -> None:
    """Build an ONNX model folder for fastembed in OUT from the BERT-family
    sentence-transformers folder SOURCE (config.json, model.safetensors, tokenizer.json).

    Needs no PyTorch and downloads nothing. OUT is replaced when an earlier conversion
    wrote it; any other existing, non-empty folder is refused.
    """
    if if_stale and is_fresh(source, out):
        click.echo(f"{out}: up to date")
        return
    try:
        done = convert(source, out)
    except ConversionError as exc:
        click.echo(f"noa: error: {exc}", err=True)
        sys.exit(1)
    click.echo(f"{out}: converted ({done.layers} layers, {done.hidden_size} wide)")
    click.echo("serve it with:")
    click.echo(f'  [fastembed.models."{source.name}"]')
    click.echo(f'  path = "{done.path.resolve()}"')
    click.echo(f'  pooling = "{done.pooling}"')
    click.echo(f"  normalize = {str(done.normalize).lower()}")
