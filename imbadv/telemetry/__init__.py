"""Telemetry every job writes while it runs: epoch lines and job files (progress), W&B (tracking)."""
