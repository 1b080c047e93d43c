"""The one writer of `cloudpilot.toml` for tests that run the daemon against a simulator."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

TOKEN = "simulator-token"


def write_config(
    folder: Path,
    *,
    seeweb: str | None = None,
    k8sgpu: str | None = None,
    glesys: str | None = None,
    rules: str | None = None,
    listen: str = "127.0.0.1:0",
    stale_after: str = "1h",
    extra: str = "",
    provider_options: Mapping[str, str] | None = None,
) -> Path:
    """Write `folder/cloudpilot.toml` for providers at these simulator URLs; return its path.

    Each provider given gets its section and its credential file beside the config; `rules`
    (YAML text) goes to `rules/rules.yaml` when given. The daemon listens on `listen` (a free
    loopback port by default), keeps its state in `state.db` and takes events up to
    `stale_after` old. `extra` is TOML added at the end: `[poll]`, `[notifiers.NAME]`...;
    `provider_options` adds TOML lines to a provider's section (`{"seeweb": 'rate = "2/s"'}`).
    """
    options = provider_options or {}
    (folder / "rules").mkdir(exist_ok=True)
    if rules is not None:
        (folder / "rules" / "rules.yaml").write_text(rules)
    sections = []
    if seeweb is not None:
        (folder / "seeweb-token").write_text(f"{TOKEN}\n")
        sections.append(
            f'[seeweb]\nurl = "{seeweb}"\ntoken_file = "seeweb-token"\n'
            f"{options.get('seeweb', '')}\n"
        )
    if k8sgpu is not None:
        (folder / "k8sgpu-password").write_text("demo\n")
        sections.append(
            f'[k8sgpu]\nurl = "{k8sgpu}"\nusername = "demo"\npassword_file = "k8sgpu-password"\n'
            f"{options.get('k8sgpu', '')}\n"
        )
    if glesys is not None:
        (folder / "glesys-key").write_text(f"{TOKEN}\n")
        sections.append(
            f'[glesys]\nurl = "{glesys}"\nproject = "cl12345"\nkey_file = "glesys-key"\n'
            f"{options.get('glesys', '')}\n"
        )
    config = folder / "cloudpilot.toml"
    config.write_text(
        f'rules = ["rules/"]\n[http]\nlisten = "{listen}"\n[state]\npath = "state.db"\n'
        + "".join(sections)
        + f'[engine]\nstale_after = "{stale_after}"\n'
        + extra
    )
    return config
