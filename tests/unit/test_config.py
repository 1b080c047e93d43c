"""The TOML config: keys checked, secrets read from files, every problem named."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.errors import ConfigError
from daemon.registry import load_config


def write(folder: Path, text: str, **secrets: str) -> Path:
    for name, value in secrets.items():
        (folder / name.replace("_", "-")).write_text(value)
    path = folder / "cloudpilot.toml"
    path.write_text(text)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    return str(caught.value).splitlines()


def test_an_empty_file_gives_safe_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""), environ={})
    assert config.model.http.listen == "127.0.0.1:9464"
    assert config.rule_paths == (tmp_path / "rules/",)
    assert config.model.provider("seeweb") is None
    assert config.model.interval("actions") == 30.0
    assert config.secrets == {}


def test_durations_paths_and_secrets_resolve_next_to_the_config(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'rules = ["mine.yaml", "/abs/rules"]\n[state]\npath = "s.db"\n'
        '[seeweb]\ntoken_file = "seeweb-token"\n[poll]\nactions = "500ms"\nbilling = "2h"\n',
        seeweb_token="  tok-123\n",
    )
    config = load_config(path, environ={})
    assert config.rule_paths == (tmp_path / "mine.yaml", Path("/abs/rules"))
    assert config.state_path == tmp_path / "s.db"
    assert config.model.interval("actions") == 0.5
    assert config.model.interval("billing") == 7200.0
    assert config.secret("seeweb.token_file").reveal() == "tok-123"
    assert "tok-123" not in repr(config)


def test_secrets_come_from_the_credentials_directory_when_systemd_sets_it(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "glesys-key").write_text("from-systemd")
    (tmp_path / "glesys-key").write_text("beside-the-config")
    path = write(tmp_path, '[glesys]\nproject = "cl1"\nkey_file = "glesys-key"\n')
    config = load_config(path, environ={"CREDENTIALS_DIRECTORY": str(creds)})
    assert config.secret("glesys.key_file").reveal() == "from-systemd"


def test_every_problem_is_named_with_file_line_key_and_reason(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[http]\nlisten = "nowhere"\n[poll]\nactions = "soon"\nmetrics = "-5m"\nbogus = 1\n'
        '[glesys]\nkey_file = "k"\n[mystery]\nx = 1\n',
    )
    assert problems(path) == [
        f"{path}:2: http.listen: expected HOST:PORT, got 'nowhere'",
        f"{path}:4: poll.actions: not a duration: 'soon' (write e.g. 30s, 5m, 1h, 2d)",
        f"{path}:5: poll.metrics: must be greater than 0",
        f"{path}:6: poll.bogus: unknown key",
        f"{path}:7: glesys.project: required",
        f"{path}:9: mystery: unknown key",
    ]


def test_seeweb_needs_exactly_one_way_to_log_in(tmp_path: Path) -> None:
    path = write(tmp_path, '[seeweb]\ntoken_file = "t"\nusername = "me"\n')
    assert problems(path) == [
        f"{path}:1: seeweb: give either token_file, or username and password_file"
    ]


def test_a_missing_or_empty_secret_names_the_key_and_path_not_the_content(tmp_path: Path) -> None:
    path = write(tmp_path, '[seeweb]\ntoken_file = "absent"\n')
    assert problems(path) == [
        f"{path}:2: seeweb.token_file: cannot read {tmp_path / 'absent'}: No such file or directory"
    ]
    (tmp_path / "absent").write_text("\n")
    assert problems(path) == [f"{path}:2: seeweb.token_file: {tmp_path / 'absent'} is empty"]


def test_broken_toml_and_unreadable_files_are_config_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "[http\n")
    (message,) = problems(path)
    assert message.startswith(f"{path}: not valid TOML: ")
    assert problems(tmp_path / "nope.toml") == [
        f"{tmp_path / 'nope.toml'}: cannot read: No such file or directory"
    ]


def test_the_postgres_store_is_refused_until_it_exists(tmp_path: Path) -> None:
    path = write(tmp_path, '[state]\ndsn = "postgresql://db/cloudpilot"\n')
    assert problems(path) == [
        f"{path}:2: state.dsn: the PostgreSQL store is not available yet; use path (SQLite)"
    ]


def test_a_provider_url_over_plain_http_is_refused_unless_it_is_loopback(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[seeweb]\nurl = "http://api.seeweb.it"\ntoken_file = "t"\n'
        '[k8sgpu]\nurl = "http://10.0.0.8:8080"\nusername = "u"\npassword_file = "p"\n'
        '[glesys]\nurl = "https://169.254.169.254"\nproject = "cl1"\nkey_file = "k"\n',
        t="token",
        p="password",
        k="key",
    )
    clear = "plain http would send the API credentials in clear; use https (http is allowed only"
    assert problems(path) == [
        f"{path}:2: seeweb.url: http://api.seeweb.it: {clear} to a loopback host, such as the"
        " simulator)",
        f"{path}:5: k8sgpu.url: http://10.0.0.8:8080: {clear} to a loopback host, such as the"
        " simulator)",
        f"{path}:9: glesys.url: https://169.254.169.254: 169.254.169.254 is a cloud metadata"
        " address",
    ]
    simulator = write(
        tmp_path, '[seeweb]\nurl = "http://127.0.0.1:8080"\ntoken_file = "t"\n', t="token"
    )
    assert load_config(simulator, environ={}).model.provider("seeweb") is not None


def test_provider_limits_are_sizes_and_durations(tmp_path: Path) -> None:
    path = write(tmp_path, '[providers]\nmax_response = "512KiB"\nmax_retry_after = "1m"\n')
    providers = load_config(path, environ={}).model.providers
    assert (providers.max_response, providers.max_retry_after) == (512 * 1024, 60.0)
    path = write(tmp_path, '[providers]\nmax_response = "lots"\nmax_retry_after = "-1s"\n')
    assert problems(path) == [
        f"{path}:2: providers.max_response: not a size: 'lots' (write e.g. 8MiB, 512KiB)",
        f"{path}:3: providers.max_retry_after: Input should be greater than or equal to 0",
    ]


def test_state_retention_defaults_to_90_days_and_keeps_at_least_a_month(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, ""), environ={}).model.state.retention == 90 * 86400
    longer = write(tmp_path, '[state]\nretention = "400d"\n')
    assert load_config(longer, environ={}).model.state.retention == 400 * 86400
    [problem] = problems(write(tmp_path, '[state]\nretention = "7d"\n'))
    assert "state.retention" in problem and "at least 35d" in problem
