"""``spnas search --strategy optuna-*`` from the command line: the plugin's options are flags, and
two searches given the same ``--storage`` and ``--study-name`` share one study (as two shells would,
one after the other, on the first one's supernet)."""

from __future__ import annotations

import pytest
import yaml

from spnas.cli.main import main

optuna = pytest.importorskip("optuna", reason="spnas-optuna needs optuna (pip install 'optuna>=4,<5')")


def search(tmp_path, out: str, *extra: str) -> dict:
    argv = ["search", "--strategy", "optuna-nsga2", "--space", "tiny", "--device", "flops", "--epochs", "1", "--bn-batches", "2",
            "--evaluations", "6", "--population", "4", "--out", str(tmp_path / out), "--quiet", *extra]
    assert main(argv) == 0
    return yaml.safe_load((tmp_path / out / "result.yaml").read_text())


def test_help_lists_the_plugins_options(capsys):
    with pytest.raises(SystemExit):
        main(["search", "--strategy", "optuna-tpe", "--help"])
    text = capsys.readouterr().out
    for flag in ("--storage URL", "--study-name NAME", "--startup-trials", "--multivariate, --no-multivariate"):
        assert flag in text
    # the sampling options come with the plugin's, --target also as a fraction of the space's range
    assert "--target T" in text and "--max-latency T" in text and "e.g. 40%" in text


def test_two_searches_share_a_study_through_the_cli(tmp_path, fast_sqlite):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    first = search(tmp_path, "a", "--storage", url, "--study-name", "s")
    assert (first["study_name"], first["storage"], first["study_trials"]) == ("s", url, first["asks"])
    assert first["study_best_trials"] >= len(first["pareto_front"]) >= 1
    second = search(tmp_path, "b", "--storage", url, "--study-name", "s", "--seed", "1",
                    "--supernet", str(tmp_path / "a" / "supernet.pt"))
    assert second["study_trials"] == first["asks"] + second["asks"] + second["study_reused"]
    study = optuna.load_study(study_name="s", storage=url)
    assert study.user_attrs["spnas_strategy"] == "optuna-nsga2" and study.user_attrs["spnas_space"] == "tiny"
    assert len(study.best_trials) == second["study_best_trials"]


def test_a_bad_storage_is_refused_before_training(tmp_path, capsys, fast_sqlite):
    base = ["search", "--strategy", "optuna-tpe", "--space", "tiny", "--device", "flops", "--epochs", "1", "--quiet"]
    assert main([*base, "--out", str(tmp_path / "a"), "--storage", "nosuch://x"]) == 2
    assert "cannot open study '(default name)' in storage nosuch://x" in capsys.readouterr().err
    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(storage=url, study_name="taken", direction="minimize")  # not a spnas study
    assert main([*base, "--out", str(tmp_path / "b"), "--storage", url, "--study-name", "taken"]) == 2
    assert "study 'taken' in sqlite:///" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
