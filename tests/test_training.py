"""`train()` end to end on toy prepared data: outputs, all modes, resume after a kill."""
import json
import os

import e2e_grec  # noqa: F401  (legacy Keras before TensorFlow)
import pytest

from e2e_grec import config as config_lib
import toy_data
from e2e_grec.models import train


class Killed(Exception):
  """Stands in for the process dying mid-training."""


@pytest.fixture(scope="module")
def toy_inputs(tmp_path_factory):
  return toy_data.write_toy_run_inputs(str(tmp_path_factory.mktemp("toy")))


def _config(**overrides):
  base = {"train.batch_size": 32, "train.epochs": 2, "train.log_every_steps": 1,
          "train.checkpoint_every_steps": 3, "sampling.fanouts": [3],
          "model.gnn_layers": 1}
  return config_lib.Config().replace(**{**base, **overrides})


def _steps(out_dir):
  with open(os.path.join(out_dir, train.LOG_FILE)) as f:
    return [r["step"] for r in map(json.loads, f) if "loss" in r]


@pytest.mark.parametrize("mode", ["e2e", "two_stage"])
def test_graph_modes_train_and_write_their_outputs(toy_inputs, tmp_path, mode):
  examples, graph = toy_inputs
  out = str(tmp_path / mode)
  metrics = train.train(_config(**{"model.mode": mode, "train.epochs": 1}), examples, graph,
                        out)
  for name in ("metrics.json", "metrics.md", "gradnorm_weights.png", "config.yaml",
               "weights/model.index"):
    assert os.path.exists(os.path.join(out, name)), name
  assert 0.0 <= metrics["mean_gauc"] <= 1.0 and metrics["examples"] == 64
  assert os.listdir(os.path.join(out, "tensorboard"))
  with open(os.path.join(out, train.LOG_FILE)) as f:
    logged = set().union(*(json.loads(line) for line in f))
  assert {"weight/click", "grad_norm/click", "throughput/train_examples_per_s"} <= logged
  if mode == "e2e":
    assert "loss/gfae" in logged and "grad_norm/gfae" in logged


def test_killed_run_resumes_from_its_last_checkpoint(toy_inputs, tmp_path):
  examples, graph = toy_inputs
  out = str(tmp_path / "run")
  config = _config(**{"model.mode": "no_graph"})

  def die_at_step_5(step):
    if step == 5:
      raise Killed()

  with pytest.raises(Killed):
    train.build_and_train(config, examples, graph, out, on_step=die_at_step_5)
  assert _steps(out) == [1, 2, 3, 4, 5]
  train.train(config, examples, graph, out)
  steps = _steps(out)
  # The checkpoint of step 3 was restored: steps 4 and 5 are redone, 1-3 are not.
  assert steps[:5] == [1, 2, 3, 4, 5] and steps[5] == 4
  assert steps.count(1) == 1 and steps[-1] == 16  # 2 epochs x 8 batches


def test_missing_inputs_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="node_tables"):
    train.train(_config(**{"model.mode": "no_graph"}), str(tmp_path), None, str(tmp_path / "o"))
