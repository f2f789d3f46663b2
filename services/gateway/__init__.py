"""FastAPI gateway: API, dashboard, webhooks and metrics. Never imports torch."""
