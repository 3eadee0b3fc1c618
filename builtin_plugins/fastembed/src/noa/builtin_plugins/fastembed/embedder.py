"""The ``fastembed`` embedder: local ONNX model folders run by fastembed (onnxruntime).

Every configured model is loaded at start-up from its folder and only from there:
fastembed gets the folder as ``specific_model_path`` with ``local_files_only``, which
returns before any hub lookup, so nothing is downloaded or even asked for. Loading and
embedding run on one worker thread of this embedder, never on the event loop; calls
queue for it (a bounded queue: one thread keeps onnxruntime's thread budget whole).

Errors follow :class:`noa.plugin_sdk.embedding.Embedder`: an unknown model is
``NotFound`` naming the known ones, a model not loaded (yet, or at all) is
``ServiceUnavailable`` with the cause, too many or too long texts ``PayloadTooLarge``,
a full queue ``TooManyRequests``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
from noa.builtin_plugins.fastembed.config import FastembedConfig, ModelSpec
from noa.plugin_sdk.embedding import InputKind, TokenSpans
from noa.plugin_sdk.errors import (
    NoaError,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    TooManyRequests,
)
from numpy.typing import NDArray

__all__ = ["FastembedEmbedder", "LoadedModel", "ModelLoadError", "load_model"]

# Files fastembed's tokenizer loader requires besides the ONNX file.
_REQUIRED = ("tokenizer.json", "tokenizer_config.json")
_CONVERT_HINT = "build one with `noa fastembed convert SOURCE_DIR OUT_DIR`"
_PROBE_TEXT = "dimension probe"


class ModelLoadError(NoaError):
    """A configured model can't be loaded: names the model, its folder and the cause."""

    def __init__(self, model: str, path: Path, cause: str) -> None:
        self.model = model
        self.path = path
        self.cause = cause
        super().__init__(f"fastembed model {model!r} at {path}: {cause}")


class LoadedModel:
    """A model ready to embed: fastembed's engine, its vector length, its tokenizer."""

    __slots__ = ("dimension", "engine", "name", "path", "spans")

    def __init__(
        self, name: str, path: Path, engine: Any, dimension: int, spans: TokenSpans
    ) -> None:
        self.name = name
        self.path = path
        self.engine = engine
        self.dimension = dimension
        self.spans = spans

    def embed(self, texts: Sequence[str], batch_size: int) -> NDArray[np.float32]:
        """Vectors in input order; computed shortest text first so that each batch is
        padded only to its own longest text."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self.dimension), np.float32)
        vectors = self.engine.embed([texts[i] for i in order], batch_size=batch_size)
        for row, vector in zip(order, vectors, strict=True):
            out[row] = vector
        return out


def _registered_name(spec: ModelSpec) -> str:
    """The name fastembed knows the spec's post-processing by, registered once per
    process. Its registry is process-wide and refuses a name twice, so the name is
    derived from the settings (the folder is passed separately, at load)."""
    from fastembed import TextEmbedding
    from fastembed.common.model_description import ModelSource, PoolingType

    settings = f"{spec.pooling}|{spec.normalize}|{spec.model_file}"
    name = f"noa-local/{hashlib.sha256(settings.encode()).hexdigest()[:16]}"
    known = {m["model"] for m in TextEmbedding.list_supported_models()}
    if name not in known:
        # Registered meanwhile by another kernel of this process: the same settings.
        with contextlib.suppress(ValueError):
            TextEmbedding.add_custom_model(
                model=name,
                pooling=PoolingType[spec.pooling.upper()],
                normalization=spec.normalize,
                # Never used: the folder comes as specific_model_path. fastembed requires one.
                sources=ModelSource(hf=name),
                # Descriptive only in fastembed; the real length is measured after loading.
                dim=0,
                model_file=spec.model_file,
            )
    return name


def _token_spans(folder: Path) -> TokenSpans:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()

    def spans(text: str) -> list[tuple[int, int]]:
        offsets: list[tuple[int, int]] = tokenizer.encode(text, add_special_tokens=False).offsets
        return offsets

    return spans


def load_model(name: str, spec: ModelSpec, *, threads: int) -> LoadedModel:
    """Load one model from its folder (blocking: call it off the event loop)."""
    folder = Path(spec.path)
    if not folder.is_dir():
        raise ModelLoadError(name, folder, f"the folder does not exist; {_CONVERT_HINT}")
    missing = [f for f in (spec.model_file, *_REQUIRED) if not (folder / f).is_file()]
    if missing:
        raise ModelLoadError(name, folder, f"{', '.join(missing)} missing; {_CONVERT_HINT}")
    try:
        from fastembed import TextEmbedding

        engine = TextEmbedding(
            _registered_name(spec),
            cache_dir=str(folder),  # fastembed creates its cache folder: give it one that exists
            threads=threads or None,
            providers=["CPUExecutionProvider"],
            specific_model_path=str(folder),
            local_files_only=True,
        )
        probe = np.asarray(next(iter(engine.embed([_PROBE_TEXT], batch_size=1))))
        spans = _token_spans(folder)
    except Exception as exc:  # onnxruntime and tokenizers raise their own or plain types
        raise ModelLoadError(name, folder, f"{type(exc).__name__}: {exc}") from None
    if probe.ndim != 1:
        raise ModelLoadError(
            name, folder, f"gives vectors of shape {list(probe.shape)} per text, not one vector"
        )
    return LoadedModel(name, folder, engine, int(probe.shape[0]), spans)


State = Literal["loading", "ready", "failed"]


class FastembedEmbedder:
    """Serves the models of ``[fastembed.models]`` by name."""

    def __init__(self, config: FastembedConfig) -> None:
        self.config = config
        self.specs = config.specs()
        self._models: dict[str, LoadedModel] = {}
        self._errors: dict[str, str] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._calls = 0  # embed calls computing or waiting

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Load every model on the worker thread; raises :class:`ModelLoadError` for the
        first that fails (the others are still tried, and reported by :meth:`statuses`)."""
        default = self.config.default_model
        if default and default not in self.specs:
            raise ValueError(
                f"[fastembed] default_model {default!r} is not one of its models "
                f"({', '.join(self.specs) or 'none configured'})"
            )
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="noa-fastembed")
        loop = asyncio.get_running_loop()
        first: ModelLoadError | None = None
        for name, spec in self.specs.items():
            try:
                load = functools.partial(load_model, name, spec, threads=self.config.threads)
                self._models[name] = await loop.run_in_executor(self._executor, load)
            except ModelLoadError as exc:
                self._errors[name] = exc.cause
                first = first or exc
        if first is not None:
            # The plugin does not start, so nothing is served, even what loaded.
            for name in self._models:
                self._errors[name] = f"not served: model {first.model!r} failed to load"
            await self.close(keep_errors=True)
            raise first

    async def close(self, *, keep_errors: bool = False) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown)
        self._models.clear()
        if not keep_errors:
            self._errors.clear()

    def statuses(self) -> dict[str, State]:
        """Each configured model's state, in config order."""

        def state(name: str) -> State:
            if name in self._models:
                return "ready"
            return "failed" if name in self._errors else "loading"

        return {name: state(name) for name in self.specs}

    def errors(self) -> dict[str, str]:
        """The cause of each model that failed to load."""
        return dict(self._errors)

    # -- the Embedder protocol ----------------------------------------------------------

    def default_model(self) -> str:
        if self.config.default_model:
            return self.config.default_model
        if not self.specs:
            raise ServiceUnavailable(
                "the fastembed embedder has no model: add one under [fastembed.models]",
                code="no_model",
            )
        return next(iter(self.specs))

    def _model(self, model: str) -> LoadedModel:
        loaded = self._models.get(model)
        if loaded is not None:
            return loaded
        if model not in self.specs:
            known = ", ".join(self.specs) or "none configured"
            raise NotFound(
                f"no fastembed model named {model!r} (models: {known})",
                code="model_not_found",
                param="model",
            )
        cause = self._errors.get(model)
        if cause is not None:
            raise ServiceUnavailable(
                f"fastembed model {model!r} failed to load: {cause}", code="model_failed"
            )
        raise ServiceUnavailable(
            f"fastembed model {model!r} is not loaded yet", code="model_loading"
        )

    async def dimension(self, model: str) -> int:
        return self._model(model).dimension

    def token_spans(self, model: str) -> TokenSpans | None:
        return self._model(model).spans

    async def embed(self, model: str, texts: Sequence[str], kind: InputKind) -> NDArray[np.float32]:
        # Custom ONNX models embed queries and passages alike (no instruction prefixes).
        loaded = self._model(model)
        self._check(texts)
        if not texts:
            return np.empty((0, loaded.dimension), np.float32)
        if self._calls > self.config.max_waiting:
            raise TooManyRequests(
                f"fastembed has {self._calls} embed calls in progress; try again shortly",
                code="embedder_busy",
                headers={"Retry-After": "1"},
            )
        executor = self._executor
        if executor is None:
            raise ServiceUnavailable("the fastembed embedder is stopped", code="model_loading")
        self._calls += 1
        try:
            batch = list(texts)
            return await asyncio.get_running_loop().run_in_executor(
                executor, loaded.embed, batch, self.config.batch_size
            )
        finally:
            self._calls -= 1

    def _check(self, texts: Sequence[str]) -> None:
        limit = self.config.max_texts
        if len(texts) > limit:
            raise PayloadTooLarge(
                f"{len(texts)} texts in one call; the fastembed embedder takes at most {limit}",
                code="too_many_texts",
                param="texts",
            )
        longest = self.config.max_chars
        for index, text in enumerate(texts):
            if len(text) > longest:
                raise PayloadTooLarge(
                    f"text {index} has {len(text)} characters; at most {longest}",
                    code="text_too_long",
                    param=f"texts[{index}]",
                )
