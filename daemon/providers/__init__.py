"""Async clients for the provider APIs, over one shared aiohttp session."""

from daemon.providers.base import ClientSettings, HttpProvider, RequestObserver
from daemon.providers.errors import (
    AuthError,
    BadResponseError,
    ConflictError,
    NotFoundError,
    PaginationLimitError,
    ProviderError,
    ProviderTimeout,
    ProviderUnreachable,
    RateLimitedError,
    RequestRejected,
    ServerError,
)
from daemon.providers.glesys import GlesysClient
from daemon.providers.k8sgpu import K8sGpuClient
from daemon.providers.seeweb import SeewebClient

__all__ = [
    "AuthError",
    "BadResponseError",
    "ClientSettings",
    "ConflictError",
    "GlesysClient",
    "HttpProvider",
    "K8sGpuClient",
    "NotFoundError",
    "PaginationLimitError",
    "ProviderError",
    "ProviderTimeout",
    "ProviderUnreachable",
    "RateLimitedError",
    "RequestObserver",
    "RequestRejected",
    "SeewebClient",
    "ServerError",
]
