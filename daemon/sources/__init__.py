"""Sources: what a source is, the helpers sources share, and the scheduler that polls them.

The sources themselves live in their provider's package (`daemon/providers/<name>/`).
"""
