"""The shipped systemd unit: it verifies, it is hardened, and it matches the example config."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from daemon.registry import load_config

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "systemd" / "cloudpilot.service"
EXAMPLE = ROOT / "deploy" / "cloudpilot.toml"
MAX_EXPOSURE = 2.0


def directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def credential_names(unit: Mapping[str, list[str]]) -> set[str]:
    return {entry.partition(":")[0] for entry in unit.get("LoadCredential", [])}


def secret_files(config: Mapping[str, Any]) -> Iterator[str]:
    for key, value in config.items():
        if isinstance(value, Mapping):
            yield from secret_files(value)
        elif key.endswith("_file") and isinstance(value, str):
            yield value


@pytest.fixture
def systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    return tool


def test_verify_passes_without_a_warning(systemd_analyze: str, tmp_path: Path) -> None:
    # verify checks that ExecStart= is executable, and /usr/bin/cloudpilot exists only where the
    # package is installed: check a copy that differs in that binary alone (/bin/true).
    text = UNIT.read_text(encoding="utf-8")
    [exec_start] = directives(text)["ExecStart"]
    binary = exec_start.split()[0]
    copy = tmp_path / "cloudpilot.service"
    copy.write_text(
        text.replace(f"ExecStart={binary} ", "ExecStart=/bin/true ", 1), encoding="utf-8"
    )

    result = subprocess.run(  # noqa: S603 - a fixed tool and arguments
        [systemd_analyze, "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_offline_security_exposure_is_at_most_two(systemd_analyze: str) -> None:
    help_text = subprocess.run(  # noqa: S603 - a fixed tool and arguments
        [systemd_analyze, "--help"], capture_output=True, text=True, timeout=60, check=False
    ).stdout
    if "--offline" not in help_text:
        pytest.skip("this systemd-analyze has no --offline (systemd < 250)")

    result = subprocess.run(  # noqa: S603 - a fixed tool and arguments
        [systemd_analyze, "security", "--offline=true", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


def test_the_unit_has_the_lifecycle_the_daemon_relies_on() -> None:
    unit = directives(UNIT.read_text(encoding="utf-8"))

    assert unit["Type"] == ["notify"]
    assert unit["ExecStart"] == ["/usr/bin/cloudpilot run --config /etc/cloudpilot/cloudpilot.toml"]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert unit["WatchdogSec"] == ["30s"]
    assert unit["Restart"] == ["on-failure"]
    assert unit["RestartPreventExitStatus"] == ["2 78"]
    assert unit["TimeoutStopSec"] == ["30s"]
    assert unit["DynamicUser"] == ["yes"]
    assert unit["StateDirectory"] == ["cloudpilot"]
    assert unit["UMask"] == ["0077"]
    assert unit["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    assert "Environment" not in unit  # secrets never travel in the environment


def test_every_secret_the_example_config_names_is_a_credential_of_the_unit() -> None:
    unit = directives(UNIT.read_text(encoding="utf-8"))
    config = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))

    named = set(secret_files(config))

    assert named
    assert named <= credential_names(unit)
    for entry in unit["LoadCredential"]:
        name, _, source = entry.partition(":")
        assert source == f"/etc/cloudpilot/credentials/{name}"
    # Each has a blank fallback, so an unused provider needs no file.
    assert {entry.partition(":")[0] for entry in unit["SetCredential"]} == credential_names(unit)


def test_the_example_config_loads_with_the_units_credentials(tmp_path: Path) -> None:
    unit = directives(UNIT.read_text(encoding="utf-8"))
    for name in credential_names(unit):
        (tmp_path / name).write_text(f"{name}-value\n", encoding="utf-8")

    config = load_config(EXAMPLE, environ={"CREDENTIALS_DIRECTORY": str(tmp_path)})

    assert config.state_path == Path("/var/lib/cloudpilot/state.db")
    assert config.model.http.listen == "127.0.0.1:9464"
    assert config.secret("seeweb.token_file").reveal() == "seeweb-token-value"
