"""The import contracts (`[tool.importlinter]` in pyproject.toml): kept, and they do bite."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """Run lint-imports on the `daemon` package found in `root`, with the project's contracts."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(  # noqa: S603 - our own tool on our own tree
        [str(LINT_IMPORTS), "--config", str(REPO / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_package_keeps_its_layers() -> None:
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_upward_import_breaks_the_layers(tmp_path: Path) -> None:
    shutil.copytree(
        REPO / "daemon", tmp_path / "daemon", ignore=shutil.ignore_patterns("__pycache__")
    )
    compiled = tmp_path / "daemon" / "rules" / "compiled.py"
    # The rule model reaching up into the engine that runs it.
    compiled.write_text(
        compiled.read_text() + "\nfrom daemon.engine.engine import Engine  # noqa\n"
    )
    result = lint_imports(tmp_path)
    assert result.returncode == 1
    assert "Layers BROKEN" in result.stdout
    assert "daemon.rules.compiled -> daemon.engine.engine" in result.stdout
