"""spnas.searching."""
