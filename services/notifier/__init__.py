"""Notify worker: signed webhook deliveries with retries, recorded per attempt."""
