"""One package per provider, each exporting `SPEC`; `daemon/registry.py` finds them here."""
