"""The errors a provider client raises; callers catch at the level they can act on.

Every message starts with ``<provider> <METHOD> <path>:`` and says what went wrong. No message
ever carries a credential, a request header or a response body.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from daemon.errors import CloudpilotError

T = TypeVar("T")


class ProviderError(CloudpilotError):
    """A call to a provider API failed."""

    def __init__(self, provider: str, method: str, endpoint: str, detail: str) -> None:
        super().__init__(f"{provider} {method} {endpoint}: {detail}")
        self.provider = provider
        self.method = method
        self.endpoint = endpoint
        self.detail = detail


class AuthError(ProviderError):
    """The provider refused our credentials (401 after one re-login, or 403)."""


class NotFoundError(ProviderError):
    """The resource does not exist (404)."""


class RequestRejected(ProviderError):
    """The provider refused the request as invalid (a 4xx other than 401, 403, 404, 429)."""

    def __init__(
        self, provider: str, method: str, endpoint: str, detail: str, *, status: int
    ) -> None:
        super().__init__(provider, method, endpoint, detail)
        self.status = status


class ConflictError(RequestRejected):
    """The resource is busy or in the wrong state (409), e.g. a snapshot is in progress."""


class RateLimitedError(ProviderError):
    """The provider answered 429 and we gave up waiting."""

    def __init__(
        self, provider: str, method: str, endpoint: str, detail: str, *, retry_after: float | None
    ) -> None:
        super().__init__(provider, method, endpoint, detail)
        self.retry_after = retry_after


class ServerError(ProviderError):
    """The provider answered with a 5xx status."""

    def __init__(
        self,
        provider: str,
        method: str,
        endpoint: str,
        detail: str,
        *,
        status: int,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(provider, method, endpoint, detail)
        self.status = status
        self.retry_after = retry_after


class ProviderTimeout(ProviderError):
    """The provider did not answer within the configured timeout."""


class ProviderUnreachable(ProviderError):
    """The connection to the provider failed before an answer arrived."""


class BadResponseError(ProviderError):
    """The provider's answer could not be read: bad JSON, a wrong type, a missing field."""


class PaginationLimitError(ProviderError, Generic[T]):
    """A paged walk hit its page bound before reaching the high-water mark."""

    # `items` holds what the walk did see (oldest first) and `high_water` the largest id seen.
    # Ids between the old mark and items[0] may be missing: a caller that accepts the partial
    # result must record the gap rather than advance silently.

    def __init__(
        self,
        provider: str,
        method: str,
        endpoint: str,
        detail: str,
        *,
        items: tuple[T, ...],
        high_water: int,
    ) -> None:
        super().__init__(provider, method, endpoint, detail)
        self.items = items
        self.high_water = high_water
