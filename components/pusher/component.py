"""Pusher interface: TFX's own Pusher (spec, inputs, push destination), our executor.

The only difference is in the executor: each pushed version carries the
model's eval record at `contracts.PUSHED_METRICS_FILE`, which the Evaluator
reads where no resolver exists (open-source Kubeflow Pipelines).
"""
from __future__ import annotations

from tfx.components.pusher import component as tfx_pusher
from tfx.dsl.components.base import executor_spec

from e2e_grec.components.pusher import executor


class Pusher(tfx_pusher.Pusher):
  """Pushes a blessed (or, without a blessing channel, any) model to the filesystem."""

  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)
