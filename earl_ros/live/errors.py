"""Request error codes of the live session that the model layer does not define.

They follow earl_ros.model.errors (EarlError subclasses with a stable `code`); the node reports
them in Query responses exactly like the model's own errors.
"""
from __future__ import annotations

from earl_ros.model.errors import ERROR_CODES, EarlError


class QueryTooLongError(EarlError):
    """The query text is longer than the node's `max_query_bytes` parameter."""

    code = "QUERY_TOO_LONG"


class InvalidRequestError(EarlError):
    """A malformed request field (e.g. a stamp with nanosec >= 1e9)."""

    code = "INVALID_REQUEST"


class InactiveError(EarlError):
    """The node is not active (lifecycle): configured but deactivated, or not configured yet."""

    code = "INACTIVE"


ROS_ERROR_CODES = (QueryTooLongError.code, InvalidRequestError.code, InactiveError.code)
ALL_ERROR_CODES = tuple(ERROR_CODES) + ROS_ERROR_CODES
