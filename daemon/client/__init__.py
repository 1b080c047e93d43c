"""The HTTP client toolkit every provider's client is built on: calls, errors, records, paging."""
