"""spnas.latency."""
