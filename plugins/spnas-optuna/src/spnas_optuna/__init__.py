"""spnas-optuna: Optuna's samplers (TPE, NSGA-II) as spnas search strategies.

The strategies are registered by :mod:`spnas_optuna.plugin` (the ``spnas`` entry point
``optuna``); the study handling they share is in :mod:`spnas_optuna.study`.
"""

from __future__ import annotations

__version__ = "0.1.0"
