"""spnas.core."""
