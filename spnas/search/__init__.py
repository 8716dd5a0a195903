"""spnas.search."""
