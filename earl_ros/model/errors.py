"""Typed errors with stable codes.

The ROS service, the CLI and the training tools all report failures as (code, message) pairs, so a
client can branch on `code` while a person reads `message`. Codes never change once published.
"""
from __future__ import annotations


class EarlError(Exception):
    """Base class; `code` is the stable, machine-readable identifier."""

    code = "INTERNAL"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:  # "CODE: message" reads well in logs and CLI output
        return f"{self.code}: {self.message}"


class InvalidImageError(EarlError):
    """Zero-size, corrupt, or otherwise undecodable image."""

    code = "INVALID_IMAGE"


class UnsupportedEncodingError(EarlError):
    """An image encoding the converter does not handle (e.g. 16UC1 depth)."""

    code = "UNSUPPORTED_ENCODING"


class EmptyQueryError(EarlError):
    code = "EMPTY_QUERY"


class NoFrameError(EarlError):
    """A query arrived before any camera frame."""

    code = "NO_FRAME"


class StampNotBufferedError(EarlError):
    """The requested frame stamp is outside the ring buffer."""

    code = "STAMP_NOT_BUFFERED"


class StaleDescriptionError(EarlError):
    """The rolling description is older than allowed and the policy is to refuse."""

    code = "STALE_DESCRIPTION"


class ModelDirError(EarlError):
    """Missing model directory, manifest, or a file the manifest names."""

    code = "MODEL_DIR"


class BackendUnavailableError(EarlError):
    """A requested backend (e.g. tensorrt) cannot run on this machine."""

    code = "BACKEND_UNAVAILABLE"


class BusyError(EarlError):
    """Too many queries in flight; the caller may retry."""

    code = "BUSY"


class FrameTooOldError(EarlError):
    """A query about "now" whose newest frame arrived longer ago than `max_frame_age` allows."""

    code = "FRAME_TOO_OLD"


class UnparseableAnswerError(EarlError):
    """The response model wrote nothing the answer grammar can use (no entity, no no-target)."""

    code = "UNPARSEABLE_ANSWER"


class CancelledError(EarlError):
    """The caller cancelled the request (the `ask` action's cancel) before it was answered."""

    code = "CANCELLED"


ERROR_CODES = (
    "OK",
    EarlError.code,
    InvalidImageError.code,
    UnsupportedEncodingError.code,
    EmptyQueryError.code,
    NoFrameError.code,
    StampNotBufferedError.code,
    StaleDescriptionError.code,
    ModelDirError.code,
    BackendUnavailableError.code,
    BusyError.code,
    FrameTooOldError.code,
    UnparseableAnswerError.code,
    CancelledError.code,
)


def debug_tracebacks() -> bool:
    """EARL_DEBUG=1: every tool prints the traceback before its one `error:` line (README). Defined
    here because every layer (model, ros, cli, training) reports errors and imports this module."""
    import os

    return os.environ.get("EARL_DEBUG", "") not in ("", "0")
