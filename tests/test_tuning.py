"""`e2e-grec tune` on toy inputs: trials run, a killed search resumes, HParams are logged."""
import argparse
import dataclasses
import glob
import json
import os
import sys

import e2e_grec  # noqa: F401  (legacy Keras before TensorFlow)
import pytest

from e2e_grec import config as config_lib
import toy_data
from e2e_grec.tuning import search, space, training_run

# Tiny runs: two training steps, then the eval on 64 toy examples.
BASE = ["train.batch_size=32", "train.max_train_steps=2", "train.log_every_steps=1",
        "train.epochs=1", "model.gnn_layers=1", "sampling.fanouts=[2]"]
# Small enough for the toy graph and fast to trace.
TOY_SPACE = space.SearchSpace(gnns=("graph_sage",), fanouts=((2, 3),), max_epochs=1)


def test_shipped_config_round_trips_through_the_search_space():
  shipped = config_lib.Config()
  params = space.params_of(shipped)
  assert set(params) <= set(space.SearchSpace().distributions())
  assert space.SearchSpace().contains(params)
  resolved = config_lib.load(None, space.override_strings(space.to_overrides(params)))
  # The GFAE weight is made explicit; everything else is the shipped config.
  assert dataclasses.replace(
      resolved, train=dataclasses.replace(resolved.train, loss_weights={})) == shipped


def test_fanouts_follow_the_layer_count():
  two_hops = config_lib.Config().replace(**{"sampling.fanouts": [10, 5], "model.gnn_layers": 2})
  values = space.to_overrides({**space.params_of(two_hops), "gnn_layers": 1})
  assert values["model.gnn_layers"] == 1 and values["sampling.fanouts"] == [10]


def test_search_runs_resumes_without_repeating_and_logs_hparams(tmp_path):
  examples, graph = toy_data.write_toy_run_inputs(str(tmp_path / "toy"))
  out = str(tmp_path / "study")
  first = search.search(examples, graph, out, trials=1, space=TOY_SPACE, overrides=BASE)
  assert first["trials"] == {"complete": 1}
  assert first["baseline"]["number"] == 0  # The shipped config runs first.
  baseline_run = first["baseline"]["run_dir"]
  finished_at = os.path.getmtime(os.path.join(baseline_run, "metrics.json"))

  # A search killed mid-trial leaves that trial RUNNING in the study; here
  # the killed trial had the baseline's parameters, so its retry reuses that run.
  study = search.open_study(out, seed=0, startup_trials=2)
  study.enqueue_trial(first["baseline"]["params"])
  TOY_SPACE.suggest(study.ask())

  second = search.search(examples, graph, out, trials=2, space=TOY_SPACE, overrides=BASE)
  assert second["trials"] == {"complete": 2, "fail": 1}
  assert [t["number"] for t in second["best"]] in ([0, 2], [2, 0])
  retry = next(t for t in second["best"] if t["number"] == 2)
  assert retry["params"] == first["baseline"]["params"] and retry["run_dir"] == baseline_run
  # The finished run was not trained again.
  assert os.path.getmtime(os.path.join(baseline_run, "metrics.json")) == finished_at
  for trial in second["best"]:
    assert 0.0 <= trial["mean_gauc"] <= 1.0
    assert trial["metrics"]["mean_gauc"] == trial["mean_gauc"]
    assert "train.batch_size=32" in trial["overrides"]
  with open(os.path.join(out, search.SUMMARY_FILE)) as f:
    assert json.load(f)["trials"] == second["trials"]

  # One TensorBoard run per finished trial, each with its HParams summary.
  from tensorboard.backend.event_processing import event_accumulator
  trial_dirs = sorted(glob.glob(os.path.join(out, "tensorboard", "trial_*")))
  assert [os.path.basename(d) for d in trial_dirs] == ["trial_000", "trial_002"]
  for trial_dir in trial_dirs:
    events = event_accumulator.EventAccumulator(trial_dir)
    events.Reload()
    assert {"_hparams_/session_start_info", "mean_gauc"} <= set(events.Tags()["tensors"])

  # Enough trials already: the command only rewrites the summary.
  args = argparse.Namespace(examples=examples, graph=graph, out=out, trials=2, max_epochs=1,
                            seed=0, summary=str(tmp_path / "tuning.json"), config=None,
                            set=BASE)
  assert search.command(args, config_lib.load(None, BASE)) == 0
  with open(tmp_path / "tuning.json") as f:
    assert json.load(f)["trials"] == second["trials"]


def test_a_failing_run_is_recorded_and_not_retried(tmp_path, monkeypatch):
  examples, graph = toy_data.write_toy_run_inputs(str(tmp_path / "toy"))
  out = str(tmp_path / "study")
  # A trainer that dies at once, without the cost of importing TensorFlow.
  monkeypatch.setattr(training_run, "train_command",
                      lambda *_: [sys.executable, "-c", "raise SystemExit('bad input')"])
  summary = search.search(examples, graph, out, trials=1, space=TOY_SPACE, overrides=BASE)
  assert summary["trials"] == {"fail": 1} and summary["best"] == []
  with open(os.path.join(out, "runs", os.listdir(os.path.join(out, "runs"))[0],
                         "train.log")) as f:
    assert "bad input" in f.read()  # The child's own error is kept in its log.
  assert search.search(examples, graph, out, trials=1, space=TOY_SPACE,
                       overrides=BASE)["trials"] == {"fail": 1}
