"""Per-task model selection: the policies, the snapshots and the exported SavedModel."""
import math
import os

import e2e_grec  # noqa: F401  (legacy Keras before TensorFlow)
import numpy as np
import pytest
import tensorflow as tf

from e2e_grec import config as config_lib
import toy_data
from e2e_grec.config import ConfigError
from e2e_grec.datasets.labels import BINARY_TASKS, REGRESSION_TASKS
from e2e_grec.models import task_selection
from e2e_grec.serving import export, graph_refresh, requests
from e2e_grec.training import loop, run

TASKS = BINARY_TASKS + REGRESSION_TASKS
# Each task's eval metric per epoch: click, skip and stay (lowest RMSE) peak at
# epoch 1, long_view and like at 2; the mean GAUC peaks at epoch 1.
SCRIPT = {"click/gauc": (0.70, 0.60), "long_view/gauc": (0.60, 0.75),
          "like/gauc": (0.50, 0.65), "skip/gauc": (0.72, 0.50), "stay/rmse": (1.1, 1.2)}
BEST_EPOCH = {"click": 1, "long_view": 2, "like": 2, "skip": 1, "stay": 1}


def _records(steps_per_epoch=8):
  records = []
  for i in range(2):
    record = {k: v[i] for k, v in SCRIPT.items()}
    record.update({f"{t}/auc": 0.5 + 0.01 * i for t in BINARY_TASKS},
                  step=(i + 1) * steps_per_epoch, epoch=i + 1, wall_s=10.0 * (i + 1))
    record["mean_gauc"] = float(np.mean([record[f"{t}/gauc"] for t in BINARY_TASKS]))
    records.append(record)
  return records


def test_policies_select_the_right_epochs_and_report_their_metrics():
  records = _records()
  selection = task_selection.select(records, "per_task", BINARY_TASKS, REGRESSION_TASKS)
  assert selection.metrics["selected_epochs"] == BEST_EPOCH
  assert selection.metrics["click/gauc"] == 0.70 and selection.metrics["stay/rmse"] == 1.1
  assert math.isclose(selection.metrics["mean_gauc"], np.mean([0.70, 0.75, 0.65, 0.72]))
  assert selection.metrics["like/auc"] == records[1]["like/auc"]
  compared = task_selection.compare_policies(records, BINARY_TASKS, REGRESSION_TASKS)
  assert set(compared["last"]["selected_epochs"].values()) == {2}
  assert set(compared["best_mean"]["selected_epochs"].values()) == {1}
  assert compared["best_mean"]["mean_gauc"] == records[0]["mean_gauc"]
  assert task_selection.candidate_steps(records, BINARY_TASKS, REGRESSION_TASKS) == {8, 16}
  # Epochs 3 and 4 best at nothing: only the last one (epoch 4) is kept.
  worse = [dict(records[0], step=step, epoch=step // 8, mean_gauc=0.1, **{
      k: (9.0 if k == "stay/rmse" else 0.1) for k in SCRIPT}) for step in (24, 32)]
  assert task_selection.candidate_steps(records + worse, BINARY_TASKS,
                                        REGRESSION_TASKS) == {8, 16, 32}
  with pytest.raises(ConfigError, match="export.task_selection: 'best' is not one of"):
    config_lib.Config().replace(**{"export.task_selection": "best"})


@pytest.fixture(scope="module")
def toy_inputs(tmp_path_factory):
  return toy_data.write_toy_run_inputs(str(tmp_path_factory.mktemp("toy")))


def test_saved_model_serves_each_task_from_its_best_epoch(toy_inputs, tmp_path, monkeypatch):
  """Scripted evals make the tasks peak at epochs 1 and 2: the SavedModel's
  output for each task equals that epoch's model's, with one model per epoch."""
  examples, graph = toy_inputs
  config = config_lib.Config().replace(**{
      "train.batch_size": 32, "train.epochs": 2, "train.checkpoint_every_steps": 100,
      "sampling.fanouts": [3], "model.gnn_layers": 1, "train.learning_rate": 0.05,
      "export.task_selection": "per_task"})
  evaluate, outputs, requests_ = loop.evaluate, [], []

  def scripted_evaluate(model, inputs):
    if not requests_:
      cols = inputs.eval_columns
      requests_.extend(export.request_examples(
          inputs.sampler, cols["user_id"][:6], cols["video_id"][:6], cols["tab"][:6],
          cols["hour"][:6], cols["day"][:6]))
    scorer = export.Scorer(model, inputs.sampler, config.export)
    outputs.append(scorer.serve_examples(tf.constant(requests_)))
    metrics = evaluate(model, inputs)
    epoch = len(outputs) - 1
    metrics.update({k: v[epoch] for k, v in SCRIPT.items()})
    metrics["mean_gauc"] = float(np.mean([metrics[f"{t}/gauc"] for t in BINARY_TASKS]))
    return metrics

  monkeypatch.setattr(loop, "evaluate", scripted_evaluate)
  out = str(tmp_path / "run")
  result = run.run(config, examples, graph, out)
  assert result.metrics["selected_epochs"] == BEST_EPOCH
  assert result.metrics["like/gauc"] == 0.65 and result.metrics["stay/rmse"] == 1.1
  assert sorted(os.listdir(os.path.join(out, task_selection.SNAPSHOT_DIR))) == \
      ["step_16", "step_8"]
  assert len(result.model.models) == 2  # One per distinct epoch, not one per task.
  for t in TASKS:  # The epochs really differ, so the comparison below means something.
    assert not np.allclose(outputs[0][t], outputs[1][t])

  saved = str(tmp_path / "saved_model")
  export.export_saved_model(result.model, result.sampler, result.tables, config, saved)
  loaded = tf.saved_model.load(saved)
  served = loaded.signatures[requests.EXAMPLES_SIGNATURE](examples=tf.constant(requests_))
  for t in TASKS:
    np.testing.assert_allclose(served[t], outputs[BEST_EPOCH[t] - 1][t], rtol=1e-5,
                               atol=1e-6, err_msg=t)
  # The graph tables are shared by the two copies: saved once.
  table_variables = [v for v in loaded.captured if "user_ids" in v.name]
  assert len(table_variables) == 1, [v.name for v in table_variables]
  # A graph refresh of the run serves the same selection (same graph here: same scores).
  trained = graph_refresh.TrainedModel.load(out)
  refreshed = graph_refresh.selected_transplant(trained, trained.arrays, result.sampler)
  assert isinstance(refreshed, task_selection.TaskSelectedModel)
  rescored = export.Scorer(refreshed, result.sampler, config.export).serve_examples(
      tf.constant(requests_))
  for t in TASKS:
    np.testing.assert_allclose(rescored[t], outputs[BEST_EPOCH[t] - 1][t], rtol=1e-5,
                               atol=1e-6, err_msg=t)
