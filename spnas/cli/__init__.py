"""spnas.cli."""
