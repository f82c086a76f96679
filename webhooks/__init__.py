"""The web process: webhook receiver, health, metrics (``webhooks.app:create_app()``)."""
