"""spnas.space."""
