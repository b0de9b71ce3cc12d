"""`training.run` end to end on toy prepared data: outputs, modes, resume, divergence."""
import json
import os

import e2e_grec  # noqa: F401  (legacy Keras before TensorFlow)
import numpy as np
import pytest

from e2e_grec import config as config_lib
import toy_data
from e2e_grec.config import ConfigError
from e2e_grec.models import modes
from e2e_grec.training import loop, run, run_log


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
  with open(os.path.join(out_dir, run_log.LOG_FILE)) as f:
    return [r["step"] for r in map(json.loads, f) if "loss" in r]


def _die_at(kill_step):
  def on_step(step):
    if step == kill_step:
      raise Killed()
  return on_step


@pytest.mark.parametrize("mode,warm_start", [("e2e", False), ("two_stage", False),
                                             ("e2e", True)])
def test_graph_modes_train_and_write_their_outputs(toy_inputs, tmp_path, mode, warm_start):
  examples, graph = toy_inputs
  out = str(tmp_path / mode)
  result = run.run(_config(**{"model.mode": mode, "train.epochs": 1,
                              "train.warm_start": warm_start}), examples, graph, out)
  metrics = result.metrics
  for name in ("metrics.json", "metrics.md", "gradnorm_weights.png", "config.yaml",
               "weights/model.index", run_log.EVAL_HISTORY_FILE):
    assert os.path.exists(os.path.join(out, name)), name
  assert 0.0 <= metrics["mean_gauc"] <= 1.0 and metrics["examples"] == 64
  assert metrics["mode"] == mode and result.sampler is not None
  assert os.listdir(os.path.join(out, "tensorboard"))
  with open(os.path.join(out, run_log.LOG_FILE)) as f:
    logged = set().union(*(json.loads(line) for line in f))
  assert {"weight/click", "grad_norm/click", "throughput/train_examples_per_s"} <= logged
  if mode == "e2e":
    assert "loss/gfae" in logged and "grad_norm/gfae" in logged
    # A warm start pretrains as two_stage does, then trains the encoder end to end.
    assert ("pretrain_s" in metrics) == warm_start and result.model.encoder.trainable
  else:
    assert metrics["pretrain_s"] > 0 and metrics["precompute_s"] > 0


def test_killed_run_resumes_from_its_last_checkpoint(toy_inputs, tmp_path):
  examples, graph = toy_inputs
  out = str(tmp_path / "run")
  config = _config(**{"model.mode": "no_graph"})
  with pytest.raises(Killed):
    run.run(config, examples, graph, out, on_step=_die_at(5))
  assert _steps(out) == [1, 2, 3, 4, 5]
  run.run(config, examples, graph, out)
  steps = _steps(out)
  # The checkpoint of step 3 was restored: steps 4 and 5 are redone, 1-3 are not.
  assert steps[:5] == [1, 2, 3, 4, 5] and steps[5] == 4
  assert steps.count(1) == 1 and steps[-1] == 16  # 2 epochs x 8 batches


def test_eval_history_and_best_survive_kills(toy_inputs, tmp_path, monkeypatch):
  """Killed after epoch 1's checkpoint but before its eval, then again in epoch 3:
  every epoch is evaluated exactly once and best/time to best cover all of them."""
  examples, graph = toy_inputs
  out = str(tmp_path / "run")
  config = _config(**{"model.mode": "no_graph", "train.epochs": 3,
                      "train.checkpoint_every_steps": 100})
  evaluate = loop.evaluate
  calls = []

  def die_in_first_eval(model, inputs):
    calls.append(1)
    if len(calls) == 1:
      raise Killed()
    return evaluate(model, inputs)

  monkeypatch.setattr(loop, "evaluate", die_in_first_eval)
  with pytest.raises(Killed):  # Epoch 1 (step 8) checkpointed, its eval never ran.
    run.run(config, examples, graph, out)
  with pytest.raises(Killed):  # Resumes: evaluates epoch 1, trains epoch 2, dies in 3.
    run.run(config, examples, graph, out, on_step=_die_at(20))
  metrics = run.run(config, examples, graph, out).metrics
  history = metrics["history"]
  assert [h["epoch"] for h in history] == [1, 2, 3]
  assert [h["step"] for h in history] == [8, 16, 24]
  best = max(history, key=lambda h: h["mean_gauc"])
  assert metrics["best_mean_gauc"] == best["mean_gauc"]
  assert metrics["best_epoch"] == best["epoch"]
  assert metrics["time_to_best_s"] == best["wall_s"]
  # Wall time accumulates across processes.
  assert history[0]["wall_s"] < history[1]["wall_s"] < history[2]["wall_s"]


def test_divergence_stops_with_the_step(toy_inputs, tmp_path):
  examples, graph = toy_inputs
  with pytest.raises(loop.TrainingDiverged, match=r"at step \d+: loss="):
    run.run(_config(**{"model.mode": "no_graph", "train.learning_rate": 1e38,
                       "train.loss_balancer": "fixed"}), examples, graph, str(tmp_path / "o"))


def test_check_finite_names_the_step_and_losses():
  loop.check_finite(3, {"loss": np.float32(1.0), "loss/click": 0.5, "weight/click": np.inf})
  with pytest.raises(loop.TrainingDiverged, match=r"step 7: loss/stay=inf"):
    loop.check_finite(7, {"loss": 1.0, "loss/stay": np.inf})


def test_profile_steps_writes_a_trace(toy_inputs, tmp_path):
  examples, graph = toy_inputs
  out = str(tmp_path / "o")
  run.run(_config(**{"model.mode": "no_graph", "train.epochs": 1,
                     "train.profile_steps": "2,3"}), examples, graph, out)
  traces = [f for _, _, files in os.walk(os.path.join(out, "tensorboard", "plugins",
                                                      "profile")) for f in files]
  assert any(f.endswith(".xplane.pb") for f in traces), traces
  with pytest.raises(ConfigError, match="train.profile_steps"):
    loop.profile_window("5")


def test_modes_state_what_each_mode_does():
  e2e, two, none = (modes.MODES[m] for m in ("e2e", "two_stage", "no_graph"))
  model = config_lib.Config().model
  assert e2e.encoder_trains_with_ranker and e2e.trains_gfae(model)
  assert not e2e.trains_gfae(config_lib.Config().replace(**{"model.gfae": False}).model)
  assert two.has_encoder and two.pretrains_encoder and two.reads_precomputed
  assert not two.trains_gfae(model) and not two.encoder_trains_with_ranker
  assert not none.has_encoder and not none.trains_gfae(model)


def test_missing_inputs_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="node_tables"):
    run.run(_config(**{"model.mode": "no_graph"}), str(tmp_path), None, str(tmp_path / "o"))
