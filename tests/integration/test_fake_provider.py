"""A provider package written only in the test folder autoscales through the shared policy.

`tests/fakecloud` declares `list_servers`, `cpu_metrics` and `set_cores`; nothing outside the
test folder knows it. The daemon is given a registry holding it, reads its config section,
polls its source, and the autoscale rule resizes its server in place through the runner.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from configs import write_config
from fakecloud import CLOUDS, SPEC, FakeCloud, FakeServer
from prometheus_client import CollectorRegistry

from daemon.app import Daemon
from daemon.clock import FakeClock
from daemon.errors import ConfigError
from daemon.registry import Providers
from daemon.rules.loader import RuleError, load_rules
from daemon.state.store import LedgerState

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
RULES = """\
rules:
  - name: fake-web
    autoscale:
      provider: fakecloud
      servers: {name: "web-*"}
      up: {above: 75, for: 10m, step: 1}
      down: {below: 20, for: 1h, step: 1}
      min_cores: 2
      max_cores: 4
      cooldown: 30m
      snapshot: none
      to: [hook]
"""


def write(tmp_path: Path, rules: str = RULES) -> Path:
    return write_config(
        tmp_path,
        rules=rules,
        extra='[fakecloud]\ncloud = "one"\n[poll]\nfakecloud = "1m"\n'
        '[notifiers.hook]\ntype = "webhook"\nurl = "http://127.0.0.1:9/hook"\n',
    )


@pytest.fixture
def cloud() -> FakeCloud:
    found = CLOUDS["one"] = FakeCloud(
        {"web-1": FakeServer(cores=2, load=1.8), "db-1": FakeServer(cores=2, load=1.9)}
    )
    return found


async def test_a_provider_from_the_test_folder_is_resized_in_place(
    tmp_path: Path, cloud: FakeCloud
) -> None:
    providers = Providers([SPEC])
    config = providers.load_config(write(tmp_path), environ={})
    clock = FakeClock(START)
    daemon = Daemon(config, clock=clock, registry=CollectorRegistry(), providers=providers)
    async with daemon:
        for _ in range(15):
            clock.advance(60)
            await daemon.poll_once()
            await daemon.runner.wait_idle()
        entries = await daemon.store.ledger(rule="fake-web")
    # 90% on 2 cores for 10 minutes: one core more, in place; db-1 is not web-*.
    assert cloud.edits == [("web-1", 3)]
    assert cloud.servers["web-1"].cores == 3
    [entry] = entries
    assert entry.state is LedgerState.DONE
    assert entry.decision.action == "set_cores"
    assert entry.decision.params == {
        "server": "web-1",
        "provider": "fakecloud",
        "cores": 3,
        "snapshot": "none",
    }


def test_its_rules_and_config_are_checked_like_any_provider_s(
    tmp_path: Path, cloud: FakeCloud
) -> None:
    providers = Providers([SPEC])
    vocabulary = providers.vocabulary()
    # It takes no snapshots: a resize must say `snapshot: none`, as on any such provider.
    rules = tmp_path / "unsafe.yaml"
    rules.write_text(RULES.replace("      snapshot: none\n", ""))
    with pytest.raises(RuleError, match="fakecloud takes no snapshots"):
        load_rules([rules], vocabulary)
    # It cannot power servers off: no provider here offers it.
    assert vocabulary.actions["power_off"].model_fields["provider"].default is None
    # Its section is checked by its own model, naming the key.
    (tmp_path / "config").mkdir()
    bad = write(tmp_path / "config")
    bad.write_text(bad.read_text().replace('cloud = "one"', 'cloud = "one"\nregion = "x"'))
    with pytest.raises(ConfigError, match=r"fakecloud\.region"):
        providers.load_config(bad, environ={})
