"""The higher-level rule kinds: the snapshot guard and autoscale (budget comes later)."""
