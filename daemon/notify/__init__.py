"""Notifiers: where alerts go (Alertmanager, PagerDuty, Slack, webhooks, email), and how."""
