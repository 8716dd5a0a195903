"""A study written by ``spnas search --storage`` opened in optuna-dashboard: every told trial
carries what the dashboard's tables and plots need (accuracy, latency and its units, the
architecture string, the strategy), and the objectives are named. The dashboard is started on
loopback and read through its own HTTP API, as its web page reads it."""

from __future__ import annotations

import json
import threading
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
import yaml

from spnas.cli.main import main
from spnas.latency.device import resolve_table
from spnas.latency.runtime import RuntimeModel
from spnas.space.graph import SpaceGraph

optuna = pytest.importorskip("optuna", reason="spnas-optuna needs optuna (pip install 'optuna>=4,<5')")
dashboard = pytest.importorskip("optuna_dashboard", reason="pip install optuna-dashboard")


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):  # no access log on stderr
        pass


def _get(port: int, path: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
        assert response.status == 200
        return json.loads(response.read())


def test_a_searched_study_reads_back_through_optuna_dashboard(tmp_path, fast_sqlite):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    argv = ["search", "--strategy", "optuna-nsga2", "--space", "tiny", "--device", "flops", "--epochs", "1",
            "--bn-batches", "2", "--evaluations", "5", "--population", "4", "--target", "60%", "--quiet",
            "--storage", url, "--study-name", "dash", "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    result = yaml.safe_load((tmp_path / "run" / "result.yaml").read_text())
    space = SpaceGraph.load("tiny")
    runtime = RuntimeModel(space, resolve_table("flops", space))

    server = make_server("127.0.0.1", 0, dashboard.wsgi(url), handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_port
        studies = _get(port, "/api/studies")["study_summaries"]
        study = next(s for s in studies if s["study_name"] == "dash")
        detail = _get(port, f"/api/studies/{study['study_id']}?after=0")
    finally:
        server.shutdown()
        server.server_close()
    assert detail["objective_names"] == ["accuracy", "latency"]  # the study's metric names
    done = [t for t in detail["trials"] if t["state"] == "Complete"]
    assert len(done) == result["study_trials"] >= 5
    for trial in done:
        attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
        assert attrs["strategy"] == "optuna-nsga2" and attrs["units"] == "MMACs"
        arch = space.parse(attrs["arch"])  # a valid architecture string of the space
        # the dashboard shows values as text: compare as numbers, against independent routes
        assert float(attrs["latency"]) == pytest.approx(runtime.predict(arch))
        assert [float(v) for v in trial["values"]] == pytest.approx([float(attrs["accuracy"]), float(attrs["latency"])])
    # the search's chosen network is one of the dashboard's trials, with its accuracy
    chosen = [t for t in done if {a["key"]: a["value"] for a in t["user_attrs"]}["arch"] == result["arch"]]
    assert chosen and float(chosen[0]["values"][0]) == pytest.approx(result["supernet_val_accuracy"], abs=1e-6)
