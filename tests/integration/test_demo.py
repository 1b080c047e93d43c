"""The demo tour runs to the end and tells what happened at each step."""

from __future__ import annotations

from daemon.demo import run_demo


async def test_demo_tours_every_step_and_exits_zero() -> None:
    lines: list[str] = []
    assert await run_demo(write=lines.append) == 0
    text = "\n".join(lines)
    # Each step reports an outcome it observed through the clients, not a canned sentence.
    assert "ec200004  ECS1" in text and "expendable" in text
    assert "ended 'error'" in text and "ended 'failed'" in text
    assert "new since the last poll: action" in text
    assert "power_off refused meanwhile: conflict (HTTP 409" in text
    assert "two minutes later the snapshot action is 'completed'" in text
    assert "and ec200004 is SHUTOFF" in text
    assert "server/edit cpucores=4: the server is locked" in text
    assert "after the reboot: 4 cores at 88% CPU" in text
    assert "as billed so far" in text and "true spend" in text
    assert text.rstrip().endswith("Demo finished.")
