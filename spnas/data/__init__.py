"""spnas.data."""
