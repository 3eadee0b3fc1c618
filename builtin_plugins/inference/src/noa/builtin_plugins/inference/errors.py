"""Errors of the inference runtime. API errors are answered in the API's own shape."""

from __future__ import annotations

from noa.plugin_sdk.errors import (
    BadRequest,
    GatewayTimeout,
    NoaError,
    NotFound,
    ServiceUnavailable,
    TooManyRequests,
)

__all__ = [
    "ClientGone",
    "InputTooLong",
    "ModelLoadError",
    "ModelNotFound",
    "ModelNotReady",
    "QueueFull",
    "RequestTimedOut",
]


class ModelLoadError(NoaError):
    """A model could not be loaded; names the model and the cause."""

    def __init__(self, model: str, cause: str) -> None:
        super().__init__(f"model {model!r} cannot be loaded: {cause}")
        self.model = model
        self.cause = cause


class ClientGone(NoaError):
    """The client disconnected before its request was computed; nobody gets an answer."""

    def __init__(self) -> None:
        super().__init__("the client went away before the request was computed")


class ModelNotFound(NotFound):
    def __init__(self, model: str, known: list[str]) -> None:
        listing = ", ".join(known) if known else "none"
        super().__init__(
            f"model {model!r} does not exist (models: {listing})",
            code="model_not_found",
            param="model",
        )
        self.model = model


class ModelNotReady(ServiceUnavailable):
    def __init__(self, model: str, state: str, cause: str = "") -> None:
        detail = f": {cause}" if cause else ""
        super().__init__(
            f"model {model!r} is {state}, not ready{detail}",
            code="model_not_ready",
            param="model",
            headers={"Retry-After": "5"},
        )
        self.model = model


class InputTooLong(BadRequest):
    def __init__(self, index: int, max_length: int, param: str = "input") -> None:
        super().__init__(
            f"{param}[{index}] is longer than the model's limit of {max_length} tokens; "
            "shorten it, or ask for truncation (truncate: true)",
            code="input_too_long",
            param=f"{param}[{index}]",
        )


class QueueFull(TooManyRequests):
    def __init__(self, model: str, retry_after_s: int) -> None:
        super().__init__(
            f"model {model!r} has a full request queue; retry after {retry_after_s} s",
            code="queue_full",
            headers={"Retry-After": str(retry_after_s)},
        )


class RequestTimedOut(GatewayTimeout):
    def __init__(self, model: str, timeout_ms: float) -> None:
        super().__init__(
            f"model {model!r} did not answer within the request's {timeout_ms:g} ms; "
            "retry, or allow more time (timeout_ms)",
            code="inference_timeout",
        )
