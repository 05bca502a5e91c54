"""Health, status and Prometheus metrics for a running node."""
