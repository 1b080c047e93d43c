"""What a `cloudpilot` command's exit code means; every command uses this one table.

| code | meaning |
|---|---|
| 0 | success; for `run`, a clean stop |
| 1 | failure: problems found, a provider unreadable, an action not done, a port in use |
| 2 | usage: a bad command line |
| 78 | configuration (EX_CONFIG): the config, a rule file, a credential, a state file in use |
| 130 | interrupted (Ctrl-C) |

systemd's unit restarts on 1 and not on 2 or 78 (`RestartPreventExitStatus=2 78`).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CONFIG = 78
EXIT_INTERRUPTED = 130
