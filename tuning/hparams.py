"""TensorBoard's HParams dashboard for a search: one run directory per trial.

The experiment config (every parameter's domain, the metrics) is written once
at the log root; each finished trial writes its parameters, its eval metrics
and its per-epoch mean GAUC under `trial_<number>`.
"""
from __future__ import annotations

import math
import os
from typing import Mapping, Sequence

import e2e_grec  # noqa: F401  (legacy Keras before TensorFlow)
import optuna
import tensorflow as tf
from optuna.distributions import (BaseDistribution, CategoricalDistribution,
                                  IntDistribution)
from tensorboard.plugins.hparams import api as hp

EPOCH_METRIC = "epoch/mean_gauc"


def _hparam(name: str, dist: BaseDistribution) -> hp.HParam:
  if isinstance(dist, CategoricalDistribution):
    return hp.HParam(name, hp.Discrete(list(dist.choices)))
  if isinstance(dist, IntDistribution):
    return hp.HParam(name, hp.IntInterval(dist.low, dist.high))
  return hp.HParam(name, hp.RealInterval(float(dist.low), float(dist.high)))


class HParamsLog:
  """An Optuna study callback that logs every finished trial to `logdir`."""

  def __init__(self, logdir: str, distributions: Mapping[str, BaseDistribution],
               metrics: Sequence[str]):
    self._logdir, self._metrics = logdir, tuple(metrics)
    if not os.path.isdir(logdir):  # A resumed search keeps its first config.
      with tf.summary.create_file_writer(logdir).as_default():
        hp.hparams_config(hparams=[_hparam(n, d) for n, d in distributions.items()],
                          metrics=[hp.Metric(m) for m in (*self._metrics, EPOCH_METRIC)])

  def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    metrics = trial.user_attrs.get("metrics", {})
    epochs = trial.user_attrs.get("epoch_mean_gauc") or [
        trial.intermediate_values[e] for e in sorted(trial.intermediate_values)]
    with tf.summary.create_file_writer(
        os.path.join(self._logdir, f"trial_{trial.number:03d}")).as_default():
      hp.hparams(trial.params, trial_id=f"trial_{trial.number:03d}")
      for epoch, value in enumerate(epochs, start=1):
        tf.summary.scalar(EPOCH_METRIC, value, step=epoch)
      for name in self._metrics:
        value = metrics.get(name)
        if value is not None and not math.isnan(value):
          tf.summary.scalar(name, value, step=len(epochs))
