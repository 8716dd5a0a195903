"""spnas.space: search spaces (YAML specs, the compiled graph) and architectures."""

#: the space a command uses when none is named (``spnas search``, ``spnas train ARCH``, ``spnas export ARCH``)
DEFAULT_SPACE = "spnas-cifar"
