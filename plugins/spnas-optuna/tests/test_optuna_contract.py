"""Both Optuna strategies pass spnas's strategy contract, as the built-in ones do (spnas.testing).

The contract runs each strategy end to end (tiny space, one supernet epoch: a valid result, the
latency target, determinism under a seed, resume after Ctrl-C) and on the sampling driver with
a synthetic objective (the evaluation budget, the hard constraint, no candidate evaluated twice,
seeds that matter). Options are the defaults (study in memory) with a short random start.
"""

from __future__ import annotations

import pytest

from spnas.testing import SamplingStrategyContract

pytest.importorskip("optuna", reason="spnas-optuna needs optuna (pip install 'optuna>=4,<5')")


class TestOptunaTPE(SamplingStrategyContract):
    strategy = "optuna-tpe"
    options = {"startup_trials": 3}


class TestOptunaNSGA2(SamplingStrategyContract):
    strategy = "optuna-nsga2"
    options = {"population": 4}
