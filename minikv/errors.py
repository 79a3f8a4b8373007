"""Errors a user can cause. Each message says what was wrong and what to do.

Everything minikv raises on purpose derives from :class:`MinikvError`, so the
CLI can print the message alone (no traceback) and exit non-zero.
"""

from __future__ import annotations


class MinikvError(Exception):
    """Base class of every error minikv raises on purpose."""


class ModelNotFoundError(MinikvError):
    """The model name is unknown, or the weights cannot be had (offline, not cached)."""


class UnsupportedModelError(MinikvError):
    """The checkpoint exists but its architecture or a setting is not supported."""


class InvalidRequestError(MinikvError, ValueError):
    """A prompt or a sampling parameter is out of range."""


class KVCacheFull(MinikvError):
    """The KV pool cannot hold what a request needs."""


class BlockAllocatorError(MinikvError):
    """A block was freed twice, or freed without having been allocated."""


class EndpointError(MinikvError):
    """A server under benchmark answered an HTTP error, or something that is not the OpenAI API."""


class EndpointUnreachableError(EndpointError):
    """A server under benchmark cannot be reached (nothing listens there, wrong host or port, timeout)."""
