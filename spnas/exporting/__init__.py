"""spnas.exporting."""
