"""One training run: `e2e-grec train`, the TFX Trainer and the benchmarks call `run`.

    run(config, examples_dir, graph_dir, out_dir) -> RunResult

The mode (`models.modes`) decides the phases: two_stage first pretrains the
encoder and precomputes its embeddings (each phase done once, remembered
across resumes), e2e with `train.warm_start` pretrains it the same way, then
every mode trains the ranker with `loop.Trainer`.
`model_exporters` (TF-GNN's `ModelExporter` role) then save the model.

Output in `out_dir`:
  checkpoints/         model, optimizers, step, wall time; a rerun resumes
  tensorboard/         every loss, GradNorm weights and gradient norms,
                       throughput, eval metrics (+ a profiler trace of
                       `train.profile_steps`)
  train_log.jsonl      the logged scalars, one JSON object per log step
  eval_history.jsonl   every epoch's eval metrics, across resumes
  timing.json          two_stage (warm-started e2e): seconds of pretraining (and precomputing)
  gradnorm_weights.png the loss weights over training
  task_selection/      weights of the evals a task selection policy may serve
  metrics.json, metrics.md   eval metrics of the selected model (each task's
                       from its selected eval; `selected_epochs`), best / time
                       to best, timing, `task_selection`: every policy's metrics
  weights/model        the last trained weights (`model.save_weights`): rebuild with
                       `E2EGRec(tables, config)`, call it once on a batch, then
                       `load_weights` -- or take `RunResult.model`.
  config.yaml          the resolved config
  node_tables.npz      the node tables it trained with (a graph refresh extends them)
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from typing import Callable, Protocol, Sequence

import e2e_grec  # noqa: F401  (legacy Keras before TensorFlow)
import numpy as np
import tensorflow as tf

from e2e_grec import contracts
from e2e_grec.config import Config
from e2e_grec.datasets.labels import BINARY_TASKS, REGRESSION_TASKS
from e2e_grec.datasets.node_tables import NodeTables
from e2e_grec.models import metrics as metrics_lib
from e2e_grec.models import modes, task_selection, two_stage
from e2e_grec.models.e2e_grec import E2EGRec
from e2e_grec.training import distribute
from e2e_grec.training.inputs import Inputs
from e2e_grec.training.loop import Trainer
from e2e_grec.training.run_log import plot_weights

TIMING_FILE = "timing.json"


@dataclasses.dataclass
class RunResult:
  """What a training run produced; `model` is ready for serving export: the
  model `export.task_selection` selects (an `E2EGRec`, or a
  `task_selection.TaskSelectedModel` when tasks come from different epochs).
  `sampler` is the in-memory `SubgraphSampler`, None for a no_graph model and
  with `sampling.where=beam` (the run never loaded the graph's sampling index)."""
  model: E2EGRec | task_selection.TaskSelectedModel
  metrics: dict
  sampler: object | None
  tables: NodeTables
  config: Config


class ModelExporter(Protocol):
  """Saves a finished run's model (TF-GNN runner's `ModelExporter`)."""

  def save(self, result: RunResult, export_dir: str) -> None:
    ...


class _Timing:
  """Seconds per phase, kept in `timing.json` so a resume keeps earlier phases'."""

  def __init__(self, out_dir: str):
    self._path = os.path.join(out_dir, TIMING_FILE)
    self.values: dict = {}
    if os.path.exists(self._path):
      with open(self._path) as f:
        self.values = json.load(f)

  def record(self, **values) -> None:
    self.values.update(values)
    with open(self._path, "w") as f:
      json.dump(self.values, f)


def _pretrain_phase(config: Config, model: E2EGRec, inputs: Inputs, trainer: Trainer,
                    pretrained: tf.Variable, timing: _Timing) -> None:
  """Pretrains the encoder on GFAE + link prediction, once per run (checkpointed)."""
  if bool(pretrained.numpy()):
    return
  t0 = time.time()
  steps = two_stage.pretrain(
      model, lambda e: inputs.train(e, use_cache=False), config.train.pretrain_epochs,
      config.train.learning_rate,
      log=lambda s, logs: (s % config.train.log_every_steps == 0 and
                           trainer.log.write(s, logs)))
  pretrained.assign(True)
  trainer.save()
  timing.record(pretrain_steps=steps, pretrain_s=time.time() - t0)


def _precompute_phase(config: Config, model: E2EGRec, inputs: Inputs, trainer: Trainer,
                      resumed: bool, out_dir: str, timing: _Timing) -> None:
  """Switches the inputs to the frozen encoder's precomputed embeddings (two_stage)."""
  if os.path.exists(os.path.join(out_dir, two_stage.CACHE_FILE)) and resumed:
    cache = two_stage.EmbeddingCache.load(out_dir)
  else:
    t0 = time.time()
    cache = two_stage.precompute(model, inputs.sampler, inputs.tables,
                                 [inputs.train_columns, inputs.eval_columns],
                                 config.train.batch_size)
    cache.save(out_dir)
    trainer.save()
    timing.record(precompute_s=time.time() - t0)
  inputs.use_cache(cache.lookup_fn(inputs.tables))


def _train_examples_per_s(records: list[dict]) -> float | None:
  """Median logged throughput (every process of the run; robust to its first, tracing window)."""
  rates = [r["throughput/train_examples_per_s"] for r in records
           if "throughput/train_examples_per_s" in r]
  return float(np.median(rates)) if rates else None


def _built_model(config: Config, tables: NodeTables, batch: dict) -> E2EGRec:
  """A new model with its variables created (called once on `batch`)."""
  model = E2EGRec(tables, config)
  model(batch)
  return model


def run(config: Config, examples_dir: str, graph_dir: str | None, out_dir: str, *,
        model_exporters: Sequence[ModelExporter] = (), export_dir: str | None = None,
        on_step: Callable[[int], None] | None = None) -> RunResult:
  """Trains (resuming from `out_dir/checkpoints` if present), evaluates, exports.

  `on_step(global_step)` is called after every training step (tests use it
  to interrupt a run).
  """
  started = time.time()
  mode = modes.of(config)
  inputs = Inputs.from_dirs(config, examples_dir, graph_dir)
  os.makedirs(out_dir, exist_ok=True)
  config.save(os.path.join(out_dir, contracts.RUN_CONFIG_FILE))
  # The tables the weights index into: what a graph refresh extends.
  shutil.copy(os.path.join(examples_dir, contracts.NODE_TABLES_FILE), out_dir)
  tf.keras.utils.set_random_seed(config.train.seed)
  logging.info("train: mode=%s, %d train / %d eval examples, %d steps per epoch", mode.name,
               len(inputs.train_columns["user_id"]), len(inputs.eval_columns["user_id"]),
               inputs.steps_per_epoch())

  # Build the model's variables before restoring (optimizer slots and GradNorm
  # state are restored when they are created, at the first step).
  first_batch = next(iter(inputs.train(0, use_cache=False).take(1)))
  model = _built_model(config, inputs.tables, first_batch)
  model.compile(optimizer=tf.keras.optimizers.Adam(config.train.learning_rate))
  if isinstance(tf.distribute.get_strategy(), tf.distribute.ParameterServerStrategy):
    # Except there (TF 2.21): slots created at the first step are never
    # restored, so a restarted chief's Adam would start from zero moments.
    # Create them now, for the variables a step updates (those with a
    # gradient), in the step's order: the checkpoint layout of one process.
    with tf.GradientTape() as tape:
      total = model.compute_loss(first_batch, training=True)
      total += tf.add_n(model.losses) if model.losses else 0.0
    grads = tape.gradient(total, model.trainable_variables)
    model.optimizer.build([v for g, v in zip(grads, model.trainable_variables)
                           if g is not None])
  model.balancer.loss_weights()
  pretrained = tf.Variable(False, trainable=False, name="pretrained")
  trainer = Trainer(config, model, inputs, out_dir, started,
                    extra_state={"pretrained": pretrained}, on_step=on_step)
  resumed = trainer.restore()
  timing = _Timing(out_dir)
  if mode.pretrains_encoder or (config.train.warm_start and mode.encoder_trains_with_ranker):
    _pretrain_phase(config, model, inputs, trainer, pretrained, timing)
  if mode.reads_precomputed:
    _precompute_phase(config, model, inputs, trainer, resumed, out_dir, timing)
  t0 = time.time()
  trainer.fit()

  history = trainer.history.records()
  tasks = (model.binary_tasks, model.regression_tasks)
  selection = task_selection.select(history, config.export.task_selection, *tasks)
  metrics = {**trainer.history.summary(), **selection.metrics,
             "task_selection": task_selection.compare_policies(history, *tasks)}
  records = trainer.log.records()
  metrics.update(timing.values, train_s=time.time() - t0, mode=mode.name,
                 train_examples_per_s=_train_examples_per_s(records))
  model.save_weights(os.path.join(out_dir, contracts.RUN_WEIGHTS))
  plot_weights(records, os.path.join(out_dir, "gradnorm_weights.png"))
  with open(os.path.join(out_dir, contracts.RUN_METRICS_FILE), "w") as f:
    f.write(metrics_lib.to_json(metrics))
  with open(os.path.join(out_dir, contracts.RUN_METRICS_TABLE_FILE), "w") as f:
    f.write(metrics_lib.to_markdown(metrics, model.binary_tasks, model.regression_tasks))
  serving_model = task_selection.selected_model(
      model, selection, task_selection.Snapshots(out_dir), history[-1]["step"],
      lambda: _built_model(config, inputs.tables, first_batch))
  result = RunResult(model=serving_model, metrics=metrics, sampler=inputs.sampler,
                     tables=inputs.tables, config=config)
  for exporter in model_exporters:
    if export_dir is None:
      raise ValueError("model_exporters given without an export_dir")
    exporter.save(result, export_dir)
  return result


def command(args, config: Config) -> int:
  """`e2e-grec train`: trains one model (in this process's role of the
  `train.strategy` cluster) and prints its eval metrics."""
  metrics = distribute.train(config, args.examples, args.graph, args.out).metrics
  print(metrics_lib.to_markdown(metrics, BINARY_TASKS, REGRESSION_TASKS))
  return 0
