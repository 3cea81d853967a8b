"""Retries with jitter within deadlines, and circuit breakers per downstream."""

from .breakers import BreakerOpen, Breakers
from .retry import RetryPolicy, call_with_retry, is_backpressure, is_retryable

__all__ = ["BreakerOpen", "Breakers", "RetryPolicy", "call_with_retry", "is_backpressure", "is_retryable"]
