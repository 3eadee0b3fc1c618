"""The models of one worker: loading, unloading, readiness, and the way in to each.

Model families (how a folder becomes a runnable model) come from the
``noa_register_model_families`` hook; the built-in ``bert`` family is registered there
like any other. A family's loader returns an object with the :class:`TextModel` shape.

A model that fails to load is kept as ``failed`` with its cause, for ``/v1/models`` and
the readiness report; nothing else is affected.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, Protocol

import msgspec
import numpy as np
from noa.builtin_plugins.inference.batching import Batcher, BatchStats
from noa.builtin_plugins.inference.config import InferenceConfig
from noa.builtin_plugins.inference.errors import (
    ClientGone,
    ModelLoadError,
    ModelNotFound,
    ModelNotReady,
)
from noa.builtin_plugins.inference.repository import ModelRepository, family_of
from noa.builtin_plugins.inference.text import Tokenized
from noa.plugin_sdk.errors import ApiError, PayloadTooLarge, Unprocessable
from noa.plugin_sdk.metrics import MetricsRegistry, NoMetrics
from noa.plugin_sdk.ports.device import DevicePort
from numpy.typing import NDArray

__all__ = ["EmbedResult", "ModelRuntime", "ModelStatus", "ServedModel", "TextModel"]

log = logging.getLogger("noa.inference")

State = Literal["unloaded", "loading", "ready", "failed", "unloading"]
# Above this many characters a request is tokenized off the event loop.
_INLINE_CHARS = 16_384


class TextModel(Protocol):
    """What a family's loader returns: a text model the batcher can drive."""

    dimension: int
    max_length: int
    vocab_size: int
    # Whether the model's own pipeline scales embeddings to unit length.
    normalize: bool

    def tokenize(self, texts: Sequence[str], *, truncate: bool, param: str) -> list[Tokenized]:
        """Token ids per text, cut to ``max_length`` when ``truncate`` (else refused)."""
        ...

    def encode(self, batch: Sequence[Tokenized], *, normalize: bool) -> NDArray[np.float32]:
        """One embedding row per item, in order. Called on the model's compute thread."""
        ...

    def release(self) -> None:
        """Free weights and buffers; the model is not used again."""
        ...


#: ``loader(folder, name, device, config) -> TextModel``
FamilyLoader = Callable[[Path, str, DevicePort, InferenceConfig], TextModel]


class ModelStatus(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    state: State
    family: str = ""
    dimension: int | None = None
    max_length: int | None = None
    device: str = ""
    error: str | None = None
    loaded_at: float | None = None


class EmbedResult(msgspec.Struct, frozen=True):
    vectors: NDArray[np.float32]
    # Tokens each input was computed with, after truncation.
    token_counts: list[int]
    # Indexes of the inputs cut to the model's maximum length.
    truncated: list[int]


def _return_free_memory() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise).

    A model's tensors are large allocations; after several load/unload cycles glibc's
    adaptive mmap threshold serves them from the heap, which only ``malloc_trim`` shrinks.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


class _Stats(BatchStats):
    def __init__(self, model: str, metrics: MetricsRegistry) -> None:
        self._depth = metrics.gauge(
            "inference_queue_depth", "Inputs waiting for a batch", ("model",)
        ).labels(model)
        self._size = metrics.histogram(
            "inference_batch_size",
            "Inputs per computed batch",
            ("model",),
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        ).labels(model)

    def queue_depth(self, items: int) -> None:
        self._depth.set(items)

    def batch(self, size: int) -> None:
        self._size.observe(size)


class _RequestMetrics:
    def __init__(self, model: str, metrics: MetricsRegistry) -> None:
        self._total = metrics.counter(
            "inference_requests_total", "Inference requests by outcome", ("model", "status")
        )
        self._duration = metrics.histogram(
            "inference_duration_seconds",
            "Inference request time, queue and compute, in seconds",
            ("model",),
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        ).labels(model)
        self._model = model

    def done(self, started: float, status: str) -> None:
        self._total.labels(self._model, status).inc()
        self._duration.observe(time.perf_counter() - started)


class ServedModel:
    """A loaded model with its batcher: what the API handlers call."""

    def __init__(
        self,
        name: str,
        model: TextModel,
        batcher: Batcher,
        config: InferenceConfig,
        device: str,
        metrics: MetricsRegistry | None = None,
    ) -> None:
        self.name = name
        self._metrics = _RequestMetrics(name, metrics or NoMetrics())
        self.model = model
        self.batcher = batcher
        self.device = device
        self._config = config
        self.dimension = model.dimension
        self.max_length = model.max_length
        self.vocab_size = model.vocab_size
        self.model_normalizes = model.normalize

    async def tokenize(
        self, texts: Sequence[str], *, truncate: bool, param: str = "input"
    ) -> list[Tokenized]:
        if len(texts) > self._config.max_inputs:
            raise PayloadTooLarge(
                f"{len(texts)} inputs in one request; at most {self._config.max_inputs}",
                code="too_many_inputs",
                param=param,
            )
        limit = self._config.max_input_chars
        total = 0
        for index, text in enumerate(texts):
            if len(text) > limit:
                raise PayloadTooLarge(
                    f"{param}[{index}] has {len(text)} characters; at most {limit}",
                    code="input_too_large",
                    param=f"{param}[{index}]",
                )
            total += len(text)
        if total <= _INLINE_CHARS:
            return self.model.tokenize(texts, truncate=truncate, param=param)
        return await asyncio.to_thread(self.model.tokenize, texts, truncate=truncate, param=param)

    def timeout_s(self, timeout_ms: float | None) -> float:
        wanted = self._config.timeout_ms if timeout_ms is None else timeout_ms
        return min(wanted, self._config.max_timeout_ms) / 1000.0

    async def embed(
        self,
        texts: Sequence[str],
        *,
        normalize: bool | None = None,
        truncate: bool = True,
        timeout_ms: float | None = None,
        cancelled: asyncio.Event | None = None,
        param: str = "input",
    ) -> EmbedResult:
        started = time.perf_counter()
        try:
            tokens = await self.tokenize(texts, truncate=truncate, param=param)
        except ApiError as exc:
            self._metrics.done(started, exc.code or "error")
            raise
        return await self.embed_tokens(
            tokens, normalize=normalize, timeout_ms=timeout_ms, cancelled=cancelled, _t0=started
        )

    async def embed_tokens(
        self,
        tokens: Sequence[Tokenized],
        *,
        normalize: bool | None = None,
        timeout_ms: float | None = None,
        cancelled: asyncio.Event | None = None,
        _t0: float | None = None,
    ) -> EmbedResult:
        """Embeddings of already tokenized inputs, through the batcher, counted in the
        ``inference_requests_total`` and ``inference_duration_seconds`` metrics."""
        started = time.perf_counter() if _t0 is None else _t0
        status = "ok"
        try:
            if len(tokens) > self._config.max_inputs:
                raise PayloadTooLarge(
                    f"{len(tokens)} inputs in one request; at most {self._config.max_inputs}",
                    code="too_many_inputs",
                )
            vectors = await self.batcher.submit(
                tokens,
                normalize=self.model_normalizes if normalize is None else normalize,
                timeout_s=self.timeout_s(timeout_ms),
                cancelled=cancelled,
            )
        except ApiError as exc:
            status = exc.code or "error"
            raise
        except ClientGone:
            status = "client_gone"
            raise
        except Exception:
            status = "error"
            raise
        finally:
            self._metrics.done(started, status)
        return EmbedResult(
            vectors, [len(t.ids) for t in tokens], [i for i, t in enumerate(tokens) if t.truncated]
        )


class _Slot:
    __slots__ = ("error", "family", "loaded_at", "served", "state")

    def __init__(self) -> None:
        self.state: State = "unloaded"
        self.error: str | None = None
        self.family = ""
        self.served: ServedModel | None = None
        self.loaded_at: float | None = None


class ModelRuntime:
    """Every model of the repository this worker knows, loaded or not."""

    def __init__(
        self,
        repository: ModelRepository,
        config: InferenceConfig,
        families: dict[str, FamilyLoader],
        device_factory: Callable[[], DevicePort],
        metrics: MetricsRegistry | None = None,
    ) -> None:
        self.repository = repository
        self.config = config
        self._families = families
        self._device_factory = device_factory
        self._metrics = metrics or NoMetrics()
        self._slots: dict[str, _Slot] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # True once the start-up loads have been tried (whatever their outcome).
        self.started = False

    def _slot(self, name: str) -> _Slot:
        return self._slots.setdefault(name, _Slot())

    def names(self) -> list[str]:
        return sorted(set(self.repository.names()) | set(self._slots))

    async def start(self) -> None:
        """Load the models config names; failures are recorded, not raised."""
        wanted = self.repository.names() if "*" in self.config.load else list(self.config.load)
        for name in wanted:
            try:
                await self.load(name)
            except (ModelLoadError, ModelNotFound) as exc:
                log.error("%s", exc)
        self.started = True

    async def load(self, name: str) -> ModelStatus:
        """Load ``name`` (a no-op when loaded). Raises :class:`ModelNotFound` or
        :class:`ModelLoadError`; the latter is also kept as the model's state."""
        if name not in self.repository:
            raise ModelNotFound(name, self.repository.names())
        async with self._locks.setdefault(name, asyncio.Lock()):
            slot = self._slot(name)
            if slot.state == "ready":
                return self.status(name)
            slot.state, slot.error = "loading", None
            started = time.perf_counter()
            try:
                served = await asyncio.to_thread(self._build, name, slot)
            except ModelLoadError as exc:
                slot.state, slot.error = "failed", exc.cause
                raise
            except Exception as exc:  # a family's loader may raise anything
                slot.state, slot.error = "failed", f"{type(exc).__name__}: {exc}"
                raise ModelLoadError(name, slot.error) from exc
            served.batcher.start()
            slot.served, slot.state, slot.loaded_at = served, "ready", time.time()
            log.info(
                "model %s loaded on %s in %.2f s",
                name,
                served.device,
                time.perf_counter() - started,
            )
            return self.status(name)

    def _build(self, name: str, slot: _Slot) -> ServedModel:
        folder = self.repository.path(name)
        slot.family = family_of(folder, name)
        loader = self._families.get(slot.family)
        if loader is None:
            known = ", ".join(sorted(self._families)) or "none"
            raise ModelLoadError(
                name, f"no model family {slot.family!r} is installed (families: {known})"
            )
        device = self._device_factory()
        model = loader(folder, name, device, self.config)
        batcher = Batcher(
            name,
            lambda batch, normalize: model.encode(batch, normalize=normalize),
            width=model.dimension,
            max_batch_size=self.config.max_batch_size,
            max_queue_delay_ms=self.config.max_queue_delay_ms,
            max_queue_items=self.config.max_queue_items,
            stats=_Stats(name, self._metrics),
        )
        return ServedModel(name, model, batcher, self.config, device.name, self._metrics)

    async def load_or_explain(self, name: str) -> ModelStatus:
        """:meth:`load` for the admin API: a load failure is a 422 naming the cause."""
        try:
            return await self.load(name)
        except ModelLoadError as exc:
            raise Unprocessable(str(exc), code="model_load_failed", param="model") from None

    async def unload(self, name: str) -> ModelStatus:
        """Unload ``name``: queued requests get 503, memory is released."""
        if name not in self._slots and name not in self.repository:
            raise ModelNotFound(name, self.repository.names())
        async with self._locks.setdefault(name, asyncio.Lock()):
            slot = self._slot(name)
            served = slot.served
            if served is not None:
                slot.state = "unloading"
                await served.batcher.close()
                served.model.release()
                slot.served = None
            slot.state, slot.error, slot.loaded_at = "unloaded", None, None
            del served
            gc.collect()
            _return_free_memory()
            return self.status(name)

    def get(self, name: str) -> ServedModel:
        """The ready model ``name``; 404 when unknown, 503 when not loaded."""
        slot = self._slots.get(name)
        if slot is None or slot.served is None:
            if slot is None and name not in self.repository:
                raise ModelNotFound(name, self.names())
            state = slot.state if slot else "unloaded"
            raise ModelNotReady(name, state, (slot.error or "") if slot else "")
        return slot.served

    def default(self) -> ServedModel:
        if self.config.default_model:
            return self.get(self.config.default_model)
        for name in self.names():
            slot = self._slots.get(name)
            if slot is not None and slot.served is not None:
                return slot.served
        raise ModelNotReady("(default)", "absent", "no model is loaded; load one first")

    def status(self, name: str) -> ModelStatus:
        slot = self._slots.get(name)
        if slot is None:
            if name not in self.repository:
                raise ModelNotFound(name, self.names())
            return ModelStatus(name=name, state="unloaded")
        served = slot.served
        return ModelStatus(
            name=name,
            state=slot.state,
            family=slot.family,
            dimension=served.dimension if served else None,
            max_length=served.max_length if served else None,
            device=served.device if served else "",
            error=slot.error,
            loaded_at=slot.loaded_at,
        )

    def statuses(self) -> list[ModelStatus]:
        return [self.status(name) for name in self.names()]

    async def close(self) -> None:
        for name, slot in list(self._slots.items()):
            if slot.served is not None:
                await self.unload(name)
