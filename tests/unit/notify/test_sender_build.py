"""Building senders from a config file: one per route, secrets read from their files."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from sender_fakes import make_clock, make_notification, receiver
from tls_cert import self_signed_cert

from daemon.config import Config
from daemon.errors import ConfigError
from daemon.notifications import Verdict
from daemon.notify.senders import build_senders
from daemon.registry import load_config

PATH_TOKEN = "T0K3N-in-the-path"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def write_config(directory: Path, notifiers: str, **secrets: str) -> Config:
    for name, text in secrets.items():
        (directory / name).write_text(text + "\n")
    path = directory / "cloudpilot.toml"
    path.write_text(notifiers)
    return load_config(path, environ={})


async def test_every_route_gets_a_sender_with_its_secrets(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with receiver(status=202) as target:
        cert, _ = self_signed_cert(tmp_path)
        config = write_config(
            tmp_path,
            f"""
[notifiers.am]
type = "alertmanager"
urls = ["{target.url("/a")}", "{target.url("/b")}"]

[notifiers.pd]
type = "pagerduty"
url = "{target.url("/v2/enqueue")}"
routing_key_file = "pd.key"

[notifiers.chat]
type = "slack"
url_file = "slack.url"

[notifiers.hook]
type = "webhook"
url_file = "hook.url"
secret_file = "hook.secret"

[notifiers.mail]
type = "email"
host = "smtp.example.com"
from = "alerts@example.com"
to = ["ops@example.com"]
username = "alerts"
password_file = "smtp.password"
ca_file = "{cert}"
""",
            **{
                "pd.key": "routing-key-from-file",
                "slack.url": target.url(f"/services/{PATH_TOKEN}"),
                "hook.url": target.url("/hook"),
                "hook.secret": "hook-secret-from-file",
                "smtp.password": "smtp-password-from-file",
            },
        )
        senders = build_senders(config, session=session, clock=make_clock())
        assert {name: sender.kind for name, sender in senders.items()} == {
            "am": "alertmanager",
            "pd": "pagerduty",
            "chat": "slack",
            "hook": "webhook",
            "mail": "email",
        }
        assert senders["am"].destinations == ("am#0", "am#1")
        for name in ("pd", "chat", "hook"):
            result = await senders[name].send(name, make_notification())
            assert result.verdict is Verdict.DELIVERED, result.detail
    pd, chat, hook = target.requests
    assert pd.json()["routing_key"] == "routing-key-from-file"
    assert chat.path == f"/services/{PATH_TOKEN}"
    timestamp = hook.headers["X-Cloudpilot-Timestamp"]
    mac = hmac.new(b"hook-secret-from-file", f"{timestamp}.".encode() + hook.body, hashlib.sha256)
    assert hook.headers["X-Cloudpilot-Signature"] == f"sha256={mac.hexdigest()}"
    assert PATH_TOKEN not in repr(senders)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (
            f"http://hooks.example.com/services/{PATH_TOKEN}",
            "http://hooks.example.com: http is allowed only for loopback hosts",
        ),
        (
            f"https://169.254.169.254/{PATH_TOKEN}",
            "https://169.254.169.254: 169.254.169.254 is a cloud metadata address",
        ),
        (f"https://hooks.example.com:99999/{PATH_TOKEN}", "not a valid URL"),
        (f"ftp://hooks.example.com/{PATH_TOKEN}", "must be an absolute https:// URL"),
    ],
)
@pytest.mark.parametrize("kind", ["slack", "webhook"])
async def test_an_unsafe_url_file_is_a_config_error_that_hides_the_path(
    session: aiohttp.ClientSession, tmp_path: Path, kind: str, url: str, reason: str
) -> None:
    config = write_config(
        tmp_path, f'[notifiers.out]\ntype = "{kind}"\nurl_file = "out.url"\n', **{"out.url": url}
    )
    with pytest.raises(ConfigError) as caught:
        build_senders(config, session=session, clock=make_clock())
    message = str(caught.value)
    assert message.startswith(f"{config.path}: notifiers.out.url_file: ")
    assert reason in message
    assert PATH_TOKEN not in message


def test_a_literal_url_is_checked_when_the_file_loads(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        write_config(
            tmp_path,
            f'[notifiers.out]\ntype = "slack"\nurl = "http://hooks.example.com/{PATH_TOKEN}"\n',
        )
    assert "cloudpilot.toml:3: notifiers.out.url: http://hooks.example.com: http is allowed" in str(
        caught.value
    )
    assert PATH_TOKEN not in str(caught.value)


def test_ca_file_is_only_a_key_of_email(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ca_file: not a key of a webhook notifier"):
        write_config(
            tmp_path,
            '[notifiers.out]\ntype = "webhook"\nurl = "https://h.example/x"\nca_file = "ca.pem"\n',
            **{"ca.pem": "x"},
        )


async def test_a_ca_file_that_holds_no_certificate_is_a_config_error(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path,
        """
[notifiers.mail]
type = "email"
host = "smtp.example.com"
from = "alerts@example.com"
to = ["ops@example.com"]
ca_file = "ca.pem"
""",
        **{"ca.pem": "not a certificate"},
    )
    with pytest.raises(ConfigError) as caught:
        build_senders(config, session=session, clock=make_clock())
    assert str(caught.value).startswith(f"{config.path}: notifiers.mail.ca_file: ")
