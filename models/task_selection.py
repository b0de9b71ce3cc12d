"""Per-task model selection: which evaluated checkpoint serves each task.

Tasks of one multi-task model peak at different epochs (on KuaiRand click,
long_view and skip early, like later), so production rankers keep each task's
best checkpoint. `export.task_selection` picks the policy:

    last       every task from the last eval (the model training ended with)
    best_mean  every task from the eval with the best mean GAUC
    per_task   each task from the eval where its own metric was best:
               GAUC for binary tasks, RMSE (lowest) for regression tasks

During training `Snapshots` keeps the weights of every eval that some policy
could select (at most one per task plus the best-mean one), so the policy can
also be changed at `e2e-grec export` without retraining. After training
`select` names each task's eval and the metrics of the model it makes, and
`TaskSelectedModel` serves each task from its eval's model: tasks that share
an eval share one model copy, and all copies read the same node tables and
sampler, so serving cost grows only with the number of distinct evals.
"""
from __future__ import annotations

import dataclasses
import math
import os
import shutil
from typing import Callable, Mapping, Sequence

import e2e_grec  # noqa: F401  (legacy Keras before TensorFlow)
import numpy as np
import tensorflow as tf

from e2e_grec.config import TASK_SELECTIONS

SNAPSHOT_DIR = "task_selection"


def _score(record: Mapping, key: str, sign: float) -> float:
  """`sign * record[key]`, with NaN (no user with both classes) worst."""
  value = record[key]
  return sign * value if not math.isnan(value) else -math.inf


def _best(records: Sequence[Mapping], key: str, sign: float) -> Mapping:
  """The earliest record with the best `sign * record[key]`."""
  return max(records, key=lambda r: _score(r, key, sign))


def _task_metric(task: str, regression_tasks: Sequence[str]) -> tuple[str, float]:
  """The key a task is selected by and its sign (larger signed value is better)."""
  return (f"{task}/rmse", -1.0) if task in regression_tasks else (f"{task}/gauc", 1.0)


def selected_steps(records: Sequence[Mapping], policy: str, binary_tasks: Sequence[str],
                   regression_tasks: Sequence[str]) -> dict[str, int]:
  """Task -> step of the eval whose model serves it under `policy`."""
  if policy not in TASK_SELECTIONS:
    raise ValueError(f"export.task_selection: {policy!r} is not one of "
                     f"{', '.join(TASK_SELECTIONS)}")
  if not records:
    raise ValueError("task selection needs at least one evaluation")
  tasks = tuple(binary_tasks) + tuple(regression_tasks)
  if policy == "last":
    return dict.fromkeys(tasks, records[-1]["step"])
  if policy == "best_mean":
    return dict.fromkeys(tasks, _best(records, "mean_gauc", 1.0)["step"])
  return {t: _best(records, *_task_metric(t, regression_tasks))["step"] for t in tasks}


def candidate_steps(records: Sequence[Mapping], binary_tasks: Sequence[str],
                    regression_tasks: Sequence[str]) -> set[int]:
  """The steps any policy selects, given `records`: the snapshots worth keeping."""
  return {step for policy in TASK_SELECTIONS
          for step in selected_steps(records, policy, binary_tasks, regression_tasks).values()}


def selected_metrics(records: Sequence[Mapping], steps: Mapping[str, int],
                     binary_tasks: Sequence[str]) -> dict:
  """The eval metrics of the model that serves each task from `steps[task]`.

  Every `<task>/...` metric comes from the task's eval, `mean_gauc` and
  `mean_auc` are recomputed over them (as `models.metrics.evaluate` does),
  `selected_epochs` names each task's epoch; the rest is the last eval's.
  """
  by_step = {r["step"]: r for r in records}
  out = dict(records[-1])
  for task, step in steps.items():
    out.update({k: v for k, v in by_step[step].items() if k.startswith(f"{task}/")})
  for name, metric in (("mean_gauc", "gauc"), ("mean_auc", "auc")):
    out[name] = float(np.nanmean([out[f"{t}/{metric}"] for t in binary_tasks]))
  out["selected_epochs"] = {t: by_step[s]["epoch"] for t, s in steps.items()}
  return out


@dataclasses.dataclass(frozen=True)
class Selection:
  """Which eval serves each task under `policy`, and the metrics of that model."""
  policy: str
  steps: dict[str, int]
  metrics: dict


def select(records: Sequence[Mapping], policy: str, binary_tasks: Sequence[str],
           regression_tasks: Sequence[str]) -> Selection:
  steps = selected_steps(records, policy, binary_tasks, regression_tasks)
  return Selection(policy, steps, selected_metrics(records, steps, binary_tasks))


def compare_policies(records: Sequence[Mapping], binary_tasks: Sequence[str],
                     regression_tasks: Sequence[str]) -> dict[str, dict]:
  """Policy -> headline metrics and epochs of the model it would export."""
  keys = ("mean_gauc", "mean_auc", *(f"{t}/gauc" for t in binary_tasks),
          *(f"{t}/auc" for t in binary_tasks), *(f"{t}/rmse" for t in regression_tasks),
          "selected_epochs")
  out = {}
  for policy in TASK_SELECTIONS:
    metrics = select(records, policy, binary_tasks, regression_tasks).metrics
    out[policy] = {k: metrics[k] for k in keys}
  return out


class Snapshots:
  """The model weights of candidate evals, in `<run>/task_selection/step_<n>/`.

  `save` runs before the eval is appended to the history and `prune` after,
  so a kill between them leaves at worst an extra snapshot, never a missing one.
  """

  def __init__(self, out_dir: str):
    self.directory = os.path.join(out_dir, SNAPSHOT_DIR)

  def path(self, step: int) -> str:
    return os.path.join(self.directory, f"step_{step}", "model")

  def save(self, model: tf.keras.Model, records: Sequence[Mapping],
           binary_tasks: Sequence[str], regression_tasks: Sequence[str]) -> None:
    """Saves `model` if its eval, the last of `records`, is a candidate."""
    step = records[-1]["step"]
    if step in candidate_steps(records, binary_tasks, regression_tasks):
      tf.train.Checkpoint(model=model).write(self.path(step))

  def prune(self, records: Sequence[Mapping], binary_tasks: Sequence[str],
            regression_tasks: Sequence[str]) -> None:
    """Deletes the snapshots no policy can select any more."""
    if not os.path.isdir(self.directory):
      return
    keep = {f"step_{s}" for s in candidate_steps(records, binary_tasks, regression_tasks)}
    for name in os.listdir(self.directory):
      if name not in keep:
        shutil.rmtree(os.path.join(self.directory, name))

  def restore(self, model: tf.keras.Model, step: int, selection: Selection) -> None:
    """Loads the snapshot of `step` into the built `model`."""
    path = self.path(step)
    if not tf.io.gfile.exists(path + ".index"):
      tasks = sorted(t for t, s in selection.steps.items() if s == step)
      raise FileNotFoundError(
          f"{path}: no weights of step {step}, which export.task_selection="
          f"{selection.policy} serves {', '.join(tasks)} from (a run trained before "
          "task selection existed: export it with export.task_selection=last)")
    tf.train.Checkpoint(model=model).read(path).expect_partial() \
        .assert_existing_objects_matched()


class TaskSelectedModel(tf.Module):
  """Serves each task from its own eval's model; tasks sharing an eval share a copy.

  Callable like `E2EGRec` (same inputs, one output per task) and exposes the
  attributes serving and evaluation read (`mode`, `task_names`, ...).
  """

  def __init__(self, models: Mapping[int, tf.keras.Model], steps: Mapping[str, int]):
    super().__init__(name="task_selected_model")
    first = next(iter(models.values()))
    self.mode = first.mode
    self.binary_tasks, self.regression_tasks = first.binary_tasks, first.regression_tasks
    self.task_names = first.task_names
    self.steps = dict(steps)
    self.models = list(models.values())
    self._tasks_of = [tuple(t for t in self.task_names if steps[t] == step) for step in models]

  def __call__(self, inputs: Mapping[str, tf.Tensor], training: bool = False
               ) -> dict[str, tf.Tensor]:
    out = {}
    for model, tasks in zip(self.models, self._tasks_of):
      predictions = model(inputs, training=training)
      out.update({t: predictions[t] for t in tasks})
    return {t: out[t] for t in self.task_names}


def selected_model(trained: tf.keras.Model, selection: Selection, snapshots: Snapshots,
                   last_step: int, build: Callable[[], tf.keras.Model]) -> tf.keras.Model:
  """The model to export: `trained` itself when every task is served by its
  final step, else a `TaskSelectedModel` of `build()` copies restored from
  the snapshots (`trained` serves the tasks of `last_step`)."""
  steps = sorted(set(selection.steps.values()))
  if steps == [last_step]:
    return trained
  models = {}
  for step in steps:
    if step == last_step:
      models[step] = trained
    else:
      models[step] = build()
      snapshots.restore(models[step], step, selection)
  return TaskSelectedModel(models, selection.steps)
