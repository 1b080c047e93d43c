"""URL safety as checked at rule load: the webhook's params model says what is wrong."""

from __future__ import annotations

import ipaddress

import pytest
from pydantic import ValidationError

from daemon.actions.webhook import WebhookParams
from daemon.errors import CloudpilotError
from daemon.urls import UnsafeUrlError, address_refusal, check_url, is_loopback_host


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/services/x?y=1",
        "https://10.1.2.3/hook",
        "https://[2001:db8::1]:8443/hook",
        "http://127.0.0.1:8080/hook",
        "http://127.5.6.7/hook",
        "http://[::1]:9/hook",
        "http://localhost:1/hook",
        "http://LOCALHOST./hook",
    ],
)
def test_allowed_urls(url: str) -> None:
    assert WebhookParams.model_validate({"url": url}).url == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "http://hooks.example.com/x",
            "http://hooks.example.com: http is allowed only for loopback hosts"
            " (127.0.0.0/8, ::1, localhost); use https",
        ),
        ("http://10.0.0.1/x", "http is allowed only for loopback hosts"),
        ("ftp://hooks.example.com/x", "must be an absolute https:// URL"),
        ("/relative/path", "must be an absolute https:// URL"),
        ("https:///nohost", "must be an absolute https:// URL"),
        (
            "https://user:pw@hooks.example.com/x",
            "https://hooks.example.com: a user or password in the URL is not allowed;"
            " send credentials in headers",
        ),
        ("https://user@hooks.example.com/x", "a user or password in the URL is not allowed"),
        (
            "https://169.254.169.254/latest/meta-data",
            "https://169.254.169.254: 169.254.169.254 is a cloud metadata address",
        ),
        ("https://169.254.1.1/", "169.254.1.1 is a link-local address"),
        ("https://[fe80::1]/", "fe80::1 is a link-local address"),
        ("https://[fd00:ec2::254]/", "fd00:ec2::254 is a cloud metadata address"),
        ("https://100.100.100.200/", "100.100.100.200 is a cloud metadata address"),
        ("https://0.0.0.0/", "0.0.0.0 is the unspecified address"),
        ("https://[::]/", ":: is the unspecified address"),
        ("https://224.0.0.1/", "224.0.0.1 is a multicast address"),
        ("https://[ff02::1]/", "ff02::1 is a multicast address"),
        ("https://[::ffff:169.254.169.254]/", "169.254.169.254 is a cloud metadata address"),
        ("https://[64:ff9b::a9fe:a9fe]/", "is a cloud metadata address"),  # NAT64
        ("https://[2002:a9fe:a9fe::1]/", "is a cloud metadata address"),  # 6to4
        ("https://[::a9fe:a9fe]/", "is a cloud metadata address"),  # IPv4-compatible
        (
            "https://metadata.google.internal/computeMetadata/v1/",
            "metadata.google.internal is a cloud metadata service",
        ),
        ("https://2852039166/", "write an IP address in its usual dotted form"),
        ("https://0xa9.0xfe.0xa9.0xfe/", "write an IP address in its usual dotted form"),
        ("https://hooks.example.com:99999/", "not a valid URL"),
    ],
)
def test_refused_urls_say_why(url: str, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        WebhookParams.model_validate({"url": url})
    [error] = caught.value.errors()
    assert error["loc"] == ("url",)
    assert message in error["msg"]


def test_the_error_is_a_cloudpilot_error() -> None:
    with pytest.raises(UnsafeUrlError) as caught:
        check_url("http://hooks.example.com/")
    assert isinstance(caught.value, CloudpilotError)


def test_refusal_messages_never_quote_the_path_or_query() -> None:
    with pytest.raises(UnsafeUrlError) as caught:
        check_url("http://hooks.example.com/services/T0K3N?key=s3cr3t")
    assert "T0K3N" not in str(caught.value)
    assert "s3cr3t" not in str(caught.value)


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"Idempotency-Key": "x"}, "header 'Idempotency-Key' is set by Cloudpilot"),
        ({"host": "x"}, "header 'host' is set by Cloudpilot"),
        ({"Content-Type": "text/plain"}, "header 'Content-Type' is set by Cloudpilot"),
        ({"Bad Name": "x"}, "header name 'Bad Name' is not a valid HTTP header name"),
        (
            {"X-Token": "s3cr3t\r\nInjected: 1"},
            "header 'X-Token': the value holds control characters",
        ),
    ],
)
def test_headers_are_checked_without_echoing_values(headers: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        WebhookParams.model_validate({"url": "https://hooks.example.com/", "headers": headers})
    [error] = caught.value.errors(include_input=False)
    assert message in error["msg"]
    assert "s3cr3t" not in error["msg"]


def test_timeout_is_a_duration_within_bounds() -> None:
    assert WebhookParams.model_validate({"url": "https://h.example/", "timeout": "2s"}).timeout == 2
    with pytest.raises(ValidationError):
        WebhookParams.model_validate({"url": "https://h.example/", "timeout": "0s"})
    with pytest.raises(ValidationError):
        WebhookParams.model_validate({"url": "https://h.example/", "timeout": "1h"})


def test_unknown_params_are_refused() -> None:
    with pytest.raises(ValidationError):
        WebhookParams.model_validate({"url": "https://h.example/", "method": "PUT"})


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.255.0.9", True),
        ("::1", True),
        ("localhost", True),
        ("Localhost.", True),
        ("localhost.example.com", False),
        ("10.0.0.1", False),
        ("example.com", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "10.0.0.1", "192.168.1.1", "8.8.8.8", "2001:db8::1", "::1"]
)
def test_ordinary_addresses_are_allowed(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is None
