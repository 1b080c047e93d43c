"""`cloudpilot check`, `schema` and `run` as a user meets them: exit codes and messages."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def cloudpilot(
    *args: str, cwd: Path = REPO, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own command, arguments from the test
        [sys.executable, "-m", "daemon", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize("path", sorted((REPO / "rules").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_rule_file_passes_check(path: Path) -> None:
    result = cloudpilot("check", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok: ")


def test_check_lists_every_problem_as_file_line_field_reason(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "rules:\n"
        "  - name: one\n"
        "    on: seeweb.action.failed\n"
        "    throttle: {once_within: soon}\n"
        "    do:\n"
        "      - webhook: {url: 'http://hooks.example.com/x'}\n"
        "  - name: two\n"
        "    on: seeweb.log\n"
        "    when: 'event.data.actor =='\n"
        "    do: [{log: {message: hi}}]\n"
        "    colour: blue\n"
    )
    result = cloudpilot("check", "bad.yaml", cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("bad.yaml:4: rules[0].throttle.once_within: not a duration")
    assert lines[1].startswith("bad.yaml:6: rules[0].do[0].webhook.url: ")
    assert "https" in lines[1]
    assert any(line.startswith("bad.yaml:9: rules[1].when: ") for line in lines)
    assert any(line == "bad.yaml:11: rules[1].colour: unknown field" for line in lines), lines
    assert "Traceback" not in result.stdout + result.stderr


def test_check_refuses_a_python_tag_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (tmp_path / "evil.yaml").write_text(
        f"rules: !!python/object/apply:os.system ['touch {marker}']\n"
    )
    result = cloudpilot("check", "evil.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.startswith("evil.yaml:1: ")
    assert not marker.exists()
    assert "Traceback" not in result.stderr


def test_check_refuses_a_template_bomb_without_computing_it(tmp_path: Path) -> None:
    (tmp_path / "bomb.yaml").write_text(
        "rules:\n"
        "  - name: bomb\n"
        "    on: seeweb.action.failed\n"
        "    do:\n"
        "      - alert:\n"
        "          summary: '{{ 9**99999999 }}'\n"
        "          description: \"{{ ('x' * 300000000)|length }}\"\n"
        "          to: [oncall]\n"
    )
    # Computing either would take minutes or 300 MB; the start-up of Python is all the time it
    # may take, so a generous timeout still tells a refusal from a computation.
    result = cloudpilot("check", "bomb.yaml", cwd=tmp_path, timeout=15)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "bomb.yaml:6: rules[0].do[0].alert.summary: cannot be rendered safely: "
        "an integer of more than 4,096 bits",
        "bomb.yaml:7: rules[0].do[0].alert.description: cannot be rendered safely: "
        "a value of 300,000,000 characters or items (at most 65,536)",
    ]


def test_check_refuses_typos_that_would_leave_a_rule_dead(tmp_path: Path) -> None:
    (tmp_path / "typos.yaml").write_text(
        "rules:\n"
        "  - name: never-fires\n"
        "    on: seeweb.action.faild\n"
        "    do: [{log: {message: hi}}]\n"
        "  - name: never-resolves\n"
        "    on: seeweb.action.failed\n"
        "    do:\n"
        "      - alert:\n"
        "          summary: '{{ event.data.type }} failed'\n"
        "          to: [oncall]\n"
        "          resolve: {on: seeweb.action.complete}\n"
        "  - name: renders-nothing\n"
        "    on: seeweb.action.failed\n"
        "    do:\n"
        "      - alert:\n"
        "          summary: '{{ event.dta.type }} on {{ server.plna }}'\n"
        "          description: '{{ event.data.stauts }} by {{ evnt.data.user }}'\n"
        "          to: [oncall]\n"
    )
    result = cloudpilot("check", "typos.yaml", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "typos.yaml:3: rules[0].on: no source emits 'seeweb.action.faild'; "
        "did you mean 'seeweb.action.failed'?",
        "typos.yaml:11: rules[1].do[0].alert.resolve.on: no source emits "
        "'seeweb.action.complete'; did you mean 'seeweb.action.completed'?",
        "typos.yaml:16: rules[2].do[0].alert.summary: field event.dta can never exist; "
        "did you mean 'data'?",
        "typos.yaml:16: rules[2].do[0].alert.summary: field server.plna can never exist; "
        "did you mean 'plan'?",
        "typos.yaml:17: rules[2].do[0].alert.description: variable evnt can never exist; "
        "did you mean 'event'?",
        "typos.yaml:17: rules[2].do[0].alert.description: field event.data.stauts can never "
        "exist; did you mean 'status'?",
    ]


def test_check_validates_the_config_and_its_rules(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(
        "rules:\n  - name: r\n    on: seeweb.log\n    do: [{log: {message: hi}}]\n"
    )
    (tmp_path / "cloudpilot.toml").write_text('[poll]\nlogs = "1m"\n')
    ok = cloudpilot("check", "--config", str(tmp_path / "cloudpilot.toml"))
    assert (ok.returncode, ok.stdout) == (0, "ok: 1 rules in 1 files\n")
    (tmp_path / "cloudpilot.toml").write_text('[poll]\nlogz = "1m"\n')
    bad = cloudpilot("check", "--config", str(tmp_path / "cloudpilot.toml"))
    assert bad.returncode == 1
    assert bad.stdout == f"{tmp_path / 'cloudpilot.toml'}:2: poll.logz: unknown key\n"


def test_schema_prints_the_json_schema_of_rule_files() -> None:
    result = cloudpilot("schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    assert "rules" in schema["properties"]
    assert "webhook" in result.stdout and "log" in result.stdout


def test_run_with_a_bad_listen_option_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "cloudpilot.toml").write_text("rules = []\n")
    result = cloudpilot(
        "run", "--config", str(tmp_path / "cloudpilot.toml"), "--listen", "nonsense"
    )
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "cloudpilot run: error: argument --listen: expected HOST:PORT, got 'nonsense'"
    )


def test_run_on_a_port_in_use_exits_1_naming_the_port(tmp_path: Path) -> None:
    (tmp_path / "cloudpilot.toml").write_text('rules = []\n[state]\npath = "state.db"\n')
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cloudpilot(
            "run", "--config", str(tmp_path / "cloudpilot.toml"), "--listen", f"127.0.0.1:{port}"
        )
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"cloudpilot run: cannot listen on 127.0.0.1:{port} for /metrics, /healthz, /readyz and "
        "/status: the port is already in use (another cloudpilot, or another program); choose "
        "another with [http] listen or --listen"
    )


def test_run_exits_78_on_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "cloudpilot.toml").write_text('[poll]\nactions = "often"\n')
    result = cloudpilot("run", "--config", str(tmp_path / "cloudpilot.toml"))
    assert result.returncode == 78
    assert "poll.actions: not a duration: 'often'" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_exits_78_on_a_broken_rule_file(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text("rules:\n  - name: r\n")
    (tmp_path / "cloudpilot.toml").write_text(
        '[http]\nlisten = "127.0.0.1:0"\n[state]\npath = "state.db"\n'
    )
    result = cloudpilot("run", "--config", str(tmp_path / "cloudpilot.toml"))
    assert result.returncode == 78
    assert "r.yaml:2: rules[0].do: required" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_second_run_on_the_same_state_exits_78_naming_the_first(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "cloudpilot.toml").write_text(
        '[http]\nlisten = "127.0.0.1:0"\n[state]\npath = "state.db"\n'
    )
    config = str(tmp_path / "cloudpilot.toml")
    # The daemon logs JSON lines to stdout; it holds the lock once it says it started.
    first = subprocess.Popen(  # noqa: S603 - our own command, arguments from the test
        [sys.executable, "-m", "daemon", "run", "--config", config],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert first.stdout is not None
        for line in first.stdout:
            if '"daemon_started"' in line:
                break
        second = cloudpilot("run", "--config", config)
    finally:
        first.terminate()
        first.communicate(timeout=30)
    assert second.returncode == 78, second.stderr
    assert f"already in use by another cloudpilot run (pid {first.pid}" in second.stderr
    assert "Traceback" not in second.stderr
    assert first.returncode == 0  # the first ran on, and stopped cleanly
