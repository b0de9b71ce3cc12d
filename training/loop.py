"""The training loop: steps, checkpoints, resume, divergence and per-epoch eval.

A checkpoint (`tf.train.CheckpointManager` in `out_dir/checkpoints`) holds the
model, its optimizer, the global step, the run's accumulated wall time and any
extra state the run adds (two_stage's `pretrained` flag); a rerun with the same
`out_dir` restores the latest one and carries on. Each epoch ends with a
checkpoint and an eval; a restored epoch end that was never evaluated (the
process died between the two) is evaluated first. Eval records go to the
append-only `EvalHistory`, so best metric and time to best come from every
eval of the run, however often it was killed.

Under a `tf.distribute` strategy (the caller's scope, see `distribute.py`),
steps run through `strategy.run` on each worker's rows of every global batch,
`out_dir` is this process's write directory and checkpoints are restored from
the chief's; with `parameter_server` the chief schedules the steps on the
workers through a `ClusterCoordinator`.
"""
from __future__ import annotations

import functools
import logging
import math
import os
import time
from typing import Callable

import e2e_grec  # noqa: F401  (legacy Keras before TensorFlow)
import numpy as np
import tensorflow as tf

from e2e_grec.config import Config, ConfigError
from e2e_grec.models import metrics as metrics_lib
from e2e_grec.models.e2e_grec import E2EGRec
from e2e_grec.training import distribute
from e2e_grec.models import task_selection
from e2e_grec.training.inputs import Inputs
from e2e_grec.training.run_log import EvalHistory, RunLog

CHECKPOINT_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"


class TrainingDiverged(RuntimeError):
  """A loss became NaN or infinite."""


def check_finite(step: int, logs: dict) -> None:
  """Raises `TrainingDiverged` naming the step and the non-finite losses."""
  bad = {k: float(v) for k, v in logs.items()
         if (k == "loss" or k.startswith("loss/")) and not math.isfinite(float(v))}
  if bad:
    values = ", ".join(f"{k}={v}" for k, v in sorted(bad.items()))
    raise TrainingDiverged(f"training diverged at step {step}: {values}; lower "
                           "train.learning_rate or check the labels for NaN/inf")


def profile_window(text: str) -> tuple[int, int] | None:
  """`train.profile_steps` "first,last" -> (first, last); "" -> None."""
  if not text:
    return None
  try:
    first, last = (int(s) for s in text.split(","))
  except ValueError:
    first = last = -1
  if not 0 < first <= last:
    raise ConfigError(f"train.profile_steps: {text!r} is not 'first,last' with "
                      "0 < first <= last (e.g. '10,15')")
  return first, last


def predict(model: E2EGRec, ds: tf.data.Dataset) -> dict[str, np.ndarray]:
  # A fixed signature ([None] batch) traces once, whatever the batch sizes.
  fn = tf.function(lambda x: model(x, training=False), input_signature=[ds.element_spec],
                   autograph=False)
  out: dict[str, list] = {t: [] for t in model.task_names}
  for batch in ds:
    for t, v in fn(batch).items():
      out[t].append(v.numpy())
  return {t: np.concatenate(v) for t, v in out.items()}


def evaluate(model: E2EGRec, inputs: Inputs) -> dict:
  """Eval metrics of `model` on the eval split (see `models.metrics`)."""
  columns = inputs.eval_columns
  predictions = predict(model, inputs.eval())
  return metrics_lib.evaluate(columns["user_id"], columns, predictions,
                              model.binary_tasks, model.regression_tasks)


class Trainer:
  """Trains one model for `train.epochs` epochs (or `train.max_train_steps`)."""

  def __init__(self, config: Config, model: E2EGRec, inputs: Inputs, out_dir: str,
               started: float, extra_state: dict[str, tf.Variable] | None = None,
               on_step: Callable[[int], None] | None = None):
    self._config, self._model, self._inputs = config, model, inputs
    self._started, self._on_step = started, on_step
    self._profile = profile_window(config.train.profile_steps)
    self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
    self._wall = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="wall_s")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer,
                                     step=self.step, wall_s=self._wall,
                                     **(extra_state or {}))
    self._manager = tf.train.CheckpointManager(
        checkpoint, os.path.join(out_dir, CHECKPOINT_DIR), max_to_keep=2)
    # Every worker restores the chief's checkpoints (TF's multi-worker recipe).
    self._restore_dir = os.path.join(distribute.chief_dir(out_dir), CHECKPOINT_DIR)
    self._strategy = tf.distribute.get_strategy()
    self._coordinator = (
        tf.distribute.experimental.coordinator.ClusterCoordinator(self._strategy)
        if isinstance(self._strategy, tf.distribute.ParameterServerStrategy) else None)
    self._train_fn: Callable | None = None
    self._tensorboard = os.path.join(out_dir, TENSORBOARD_DIR)
    self.log = RunLog(out_dir)
    self.history = EvalHistory(out_dir)
    self._wall_at_restore = 0.0
    self._tracing = False

  def restore(self) -> bool:
    """Restores the latest checkpoint, if any (model variables must exist)."""
    latest = tf.train.latest_checkpoint(self._restore_dir)
    if latest:
      self._manager.checkpoint.restore(latest)
      self._wall_at_restore = float(self._wall.numpy())
      logging.info("train: resumed from %s at step %d", latest, int(self.step.numpy()))
    return bool(latest)

  def elapsed(self) -> float:
    """Wall time of the run so far: earlier processes' (to their last checkpoint) + this one's."""
    return self._wall_at_restore + time.time() - self._started

  def save(self) -> None:
    self._wall.assign(self.elapsed())
    self._manager.save(checkpoint_number=int(self.step.numpy()))

  def _total_steps(self) -> int:
    total = self._inputs.steps_per_epoch() * self._config.train.epochs
    limit = self._config.train.max_train_steps
    return min(total, limit) if limit else total

  def _evaluate(self, step: int) -> None:
    metrics = evaluate(self._model, self._inputs)
    per_epoch = self._inputs.steps_per_epoch()
    metrics.update(step=step, epoch=math.ceil(step / per_epoch), wall_s=self.elapsed())
    # Snapshot before the record exists, prune after: never a selectable eval without weights.
    snapshots = task_selection.Snapshots(self.history.directory)
    tasks = (self._model.binary_tasks, self._model.regression_tasks)
    snapshots.save(self._model, self.history.records() + [metrics], *tasks)
    self.history.append(metrics)
    snapshots.prune(self.history.records(), *tasks)
    self.log.write(step, {f"eval/{k}": v for k, v in metrics.items()
                          if isinstance(v, float) and not math.isnan(v)})
    logging.info("train: step %d eval mean GAUC %.4f mean AUC %.4f", step,
                 metrics["mean_gauc"], metrics["mean_auc"])

  def _profiling(self, step: int) -> None:
    """Starts the profiler before step `first`, stops it after `last` (or at -1)."""
    if self._profile is None:
      return
    first, last = self._profile
    if step + 1 == first and not self._tracing:  # The trace covers steps first..last.
      tf.profiler.experimental.start(self._tensorboard)
      self._tracing = True
    elif (step >= last or step < 0) and self._tracing:
      tf.profiler.experimental.stop()
      self._tracing = False
      logging.info("train: profiler trace of steps %d-%d in %s", first, last,
                   self._tensorboard)

  def _train_batches(self, epoch: int, skip: int = 0):
    """Epoch `epoch`'s batches from `skip` on (see `_step_function` for what each holds)."""
    if self._coordinator is not None:
      return self._inputs.train_examples(epoch, skip)
    if not tf.distribute.has_strategy():
      return self._inputs.train(epoch, skip)
    return self._strategy.distribute_datasets_from_function(
        lambda shard: self._inputs.train(epoch, skip, shard=shard))

  def _step_function(self, epoch: int) -> Callable:
    """batch -> logs: one training step of epoch `epoch`.

    One process: `train_step` on batches with their subgraphs. MWMS:
    `strategy.run` on this worker's rows (sampled in its tf.data pipeline);
    `train_step` logs cross-replica means, the same on every replica.
    parameter_server: the chief schedules the step on a free worker, which
    samples the example batch's subgraphs against the tables on the PS tasks.
    """
    strategy, model = self._strategy, self._model
    if self._coordinator is not None:
      add_graph = self._inputs.graph_fn(self._inputs.train_sampling_seed(epoch))

      def sample_and_train(balance: bool) -> Callable:
        # A plain one-argument function: the coordinator calls its concrete function.
        return tf.function(lambda batch: strategy.run(
            lambda b: model.train_step(add_graph(b) if add_graph else b, balance=balance),
            args=(batch,)), autograph=False)

      steps = {balance: sample_and_train(balance) for balance in (False, True)}
      # One step at a time (fetched before the next): the same steps as one process.
      return lambda batch: self._coordinator.schedule(
          steps[self._balances_now()], args=(batch,)).fetch()
    if self._train_fn is None:
      spec = self._train_batches(0).element_spec
      if not tf.distribute.has_strategy():
        # No autograph: the model branches on Python values only (tf.cond where
        # not), and converting every layer call took half of the step's tracing.
        self._train_fn = tf.function(model.train_step, input_signature=[spec],
                                     autograph=False)
      else:

        def replicated_step(batch, balance: bool):
          logs = strategy.run(model.train_step, args=(batch,), kwargs={"balance": balance})
          return {k: strategy.experimental_local_results(v)[0] for k, v in logs.items()}

        steps = {balance: tf.function(functools.partial(replicated_step, balance=balance),
                                      input_signature=[spec], autograph=False)
                 for balance in (False, True)}
        self._train_fn = lambda batch: steps[self._balances_now()](batch)
    return self._train_fn

  def _balances_now(self) -> bool:
    """Whether the next step updates the loss weights (see `E2EGRec.train_step`)."""
    iterations = int(self._model.optimizer.iterations.numpy())
    return (iterations + 1) % self._model.balance_every == 0

  def _examples(self, batch) -> int:
    """Examples in the global batch (this worker's rows times the workers)."""
    local = self._strategy.experimental_local_results(batch["user_id"])
    pipelines = self._strategy.num_replicas_in_sync // len(local)
    return sum(int(tf.shape(ids)[0]) for ids in local) * pipelines

  def fit(self) -> None:
    """Trains to the last step, checkpointing, logging and evaluating on the way."""
    config = self._config.train
    per_epoch, total = self._inputs.steps_per_epoch(), self._total_steps()
    step = int(self.step.numpy())
    if step and (step % per_epoch == 0 or step >= total) \
        and step not in self.history.evaluated_steps():
      self._evaluate(step)  # Checkpointed, then killed before its eval.
    while step < total:
      epoch, skip = divmod(step, per_epoch)
      window_start, window_examples = time.time(), 0
      train_fn = self._step_function(epoch)
      for batch in self._train_batches(epoch, skip):
        self._profiling(step)
        logs = train_fn(batch)
        step = int(self.step.assign_add(1).numpy())
        check_finite(step, logs)
        window_examples += self._examples(batch)
        if step % config.log_every_steps == 0:
          rate = window_examples / max(time.time() - window_start, 1e-9)
          self.log.write(step, dict(logs, **{"throughput/train_examples_per_s": rate}))
          window_start, window_examples = time.time(), 0
        if step % config.checkpoint_every_steps == 0:
          self.save()
        if self._on_step is not None:
          self._on_step(step)
        if step >= total or step % per_epoch == 0:
          break
      self.save()
      self._evaluate(step)
    self._profiling(-1)  # Ends a trace the last step cut short.
    if not self.history.records():  # Nothing to train (epochs or steps of 0).
      self._evaluate(step)
