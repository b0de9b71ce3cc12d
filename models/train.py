"""Training and evaluation of one model: `e2e-grec train` and the TFX Trainer.

    train(config, examples_dir, graph_dir, out_dir) -> eval metrics (dict)
    build_and_train(...) -> TrainResult (the trained model object + metrics)

Input: `prepare`'s examples (Split-train, Split-eval, node_tables.npz) and,
unless `model.mode=no_graph`, `build-graph`'s `sampling_index.npz`. Training
batches are shuffled per epoch with seed `train.seed + epoch` (so a resumed
run replays the same order and skips what it had done), then the sampler
adds `graph` inside tf.data; two_stage adds the precomputed embeddings instead.

Output in `out_dir`:
  checkpoints/        tf.train.CheckpointManager (model, optimizers, step);
                      a rerun with the same out_dir resumes from the latest
  tensorboard/        every loss, GradNorm weights and gradient norms,
                      throughput, eval metrics
  train_log.jsonl     the logged scalars, one JSON object per log step
  gradnorm_weights.png the loss weights over training
  metrics.json, metrics.md   eval metrics (+ timing and throughput in json)
  weights/model       the trained weights (`model.save_weights`): rebuild with
                      `E2EGRec(NodeTables.load(...), config)`, call it once on
                      a batch, then `load_weights` -- or take `TrainResult.model`.
  config.yaml         the resolved config
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from typing import Callable

import e2e_grec  # noqa: F401  (legacy Keras before TensorFlow)
import matplotlib
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from e2e_grec import contracts
from e2e_grec.config import Config
from e2e_grec.datasets import examples as examples_lib
from e2e_grec.datasets.labels import BINARY_TASKS, REGRESSION_TASKS
from e2e_grec.datasets.node_tables import NodeTables
from e2e_grec.models import metrics as metrics_lib
from e2e_grec.models import two_stage
from e2e_grec.models.e2e_grec import E2EGRec

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402  (after choosing the backend)

LOG_FILE = "train_log.jsonl"
# What `tf.summary.scalar` writes, without needing the tensorboard package
# installed: TensorBoard's scalars plugin reads these events.
_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
).SerializeToString()


@dataclasses.dataclass
class TrainResult:
  """What a training run produced; `model` is ready for serving export."""
  model: E2EGRec
  metrics: dict
  sampler: object | None
  tables: NodeTables


def load_split(examples_dir: str, split: str) -> dict[str, np.ndarray]:
  path = contracts.split_file(examples_dir, split)
  if not os.path.exists(path):
    raise FileNotFoundError(f"no {split} examples at {path}; run `e2e-grec prepare` first")
  columns = examples_lib.read_examples(path)
  if not len(columns["user_id"]):
    raise ValueError(f"{path} holds no examples")
  return columns


def make_sampler(config: Config, graph_dir: str, tables: NodeTables):
  from e2e_grec.graph.sampler import SubgraphSampler
  from e2e_grec.graph.sampling_index import SamplingIndex
  return SubgraphSampler(SamplingIndex.load(graph_dir), tables, config.sampling)


class Inputs:
  """tf.data pipelines of one run: batches, then `graph` or cached embeddings."""

  def __init__(self, config: Config, train: dict, eval_: dict, sampler, tables: NodeTables):
    self._config, self._train, self._eval = config, train, eval_
    self._sampler, self._tables = sampler, tables
    self.cache_fn: Callable | None = None

  def _batched(self, columns: dict, shuffle_seed: int | None) -> tf.data.Dataset:
    ds = tf.data.Dataset.from_tensor_slices(columns)
    if shuffle_seed is not None:
      ds = ds.shuffle(len(columns["user_id"]), seed=shuffle_seed,
                      reshuffle_each_iteration=False)
    return ds.batch(self._config.train.batch_size)

  def _add_graph(self, ds: tf.data.Dataset, seed: int, use_cache: bool) -> tf.data.Dataset:
    if use_cache and self.cache_fn is not None:
      ds = ds.map(self.cache_fn, num_parallel_calls=tf.data.AUTOTUNE)
    elif self._sampler is not None:
      sampler = self._sampler
      ds = ds.map(lambda b: {**b, contracts.GRAPH_INPUT: sampler(b["user_id"], b["video_id"], b["day"],
                                                   seed=seed)},
                  num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)

  def train(self, epoch: int, skip: int = 0, use_cache: bool = True) -> tf.data.Dataset:
    """Epoch `epoch`'s batches; neighbours are re-drawn every epoch."""
    seed = self._config.train.seed * 1000 + epoch
    ds = self._batched(self._train, seed).skip(skip)
    return self._add_graph(ds, self._config.sampling.seed + 1 + epoch, use_cache)

  def eval(self) -> tf.data.Dataset:
    """Eval batches in file order, sampled with the serving seed."""
    return self._add_graph(self._batched(self._eval, None), self._config.sampling.seed, True)

  def steps_per_epoch(self) -> int:
    return math.ceil(len(self._train["user_id"]) / self._config.train.batch_size)


def predict(model: E2EGRec, ds: tf.data.Dataset) -> dict[str, np.ndarray]:
  # A fixed signature ([None] batch) traces once, whatever the batch sizes.
  fn = tf.function(lambda x: model(x, training=False), input_signature=[ds.element_spec])
  out: dict[str, list] = {t: [] for t in model.task_names}
  for batch in ds:
    for t, v in fn(batch).items():
      out[t].append(v.numpy())
  return {t: np.concatenate(v) for t, v in out.items()}


def evaluate(model: E2EGRec, inputs: Inputs, columns: dict) -> dict:
  predictions = predict(model, inputs.eval())
  return metrics_lib.evaluate(columns["user_id"], columns, predictions,
                              model.binary_tasks, model.regression_tasks)


class RunLog:
  """Scalars to TensorBoard and train_log.jsonl (appended across resumes)."""

  def __init__(self, out_dir: str):
    self._writer = tf.summary.create_file_writer(os.path.join(out_dir, "tensorboard"))
    self._path = os.path.join(out_dir, LOG_FILE)

  def write(self, step: int, values: dict) -> None:
    plain = {k: float(np.asarray(v)) for k, v in values.items()}
    with self._writer.as_default(step=step):
      for k, v in plain.items():
        tf.summary.write(k, tf.constant(v, tf.float32), metadata=_SCALAR_METADATA)
    with open(self._path, "a") as f:
      f.write(json.dumps({"step": step, **plain}) + "\n")

  def records(self) -> list[dict]:
    if not os.path.exists(self._path):
      return []
    with open(self._path) as f:
      return [json.loads(line) for line in f if line.strip()]


def plot_weights(records: list[dict], path: str) -> None:
  """The loss weights over training (GradNorm's, or constant ones)."""
  names = sorted({k for r in records for k in r if k.startswith("weight/")})
  fig, ax = plt.subplots(figsize=(7, 4))
  for name in names:
    points = [(r["step"], r[name]) for r in records if name in r]
    ax.plot([p[0] for p in points], [p[1] for p in points], label=name.split("/", 1)[1])
  ax.set_xlabel("step")
  ax.set_ylabel("loss weight")
  ax.set_title("Loss weights over training")
  if names:
    ax.legend(loc="best", fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _input_throughput(ds: tf.data.Dataset, batches: int = 10) -> float:
  """Examples/s of the input pipeline alone (sampler included), after warm-up."""
  it = iter(ds)
  next(it)
  start, n = time.time(), 0
  for _ in range(batches):
    try:
      n += int(tf.shape(next(it)["user_id"])[0])
    except StopIteration:
      break
  return n / max(time.time() - start, 1e-9)


def build_and_train(config: Config, examples_dir: str, graph_dir: str | None, out_dir: str,
                    on_step: Callable[[int], None] | None = None) -> TrainResult:
  """Trains (resuming from `out_dir/checkpoints` if present) and evaluates.

  `on_step(global_step)` is called after every training step (tests use it
  to interrupt a run).
  """
  started = time.time()
  os.makedirs(out_dir, exist_ok=True)
  config.save(os.path.join(out_dir, "config.yaml"))
  tf.keras.utils.set_random_seed(config.train.seed)
  mode = config.model.mode
  tables_path = os.path.join(examples_dir, contracts.NODE_TABLES_FILE)
  if not os.path.exists(tables_path):
    raise FileNotFoundError(f"no node tables at {tables_path}; run `e2e-grec prepare` first")
  tables = NodeTables.load(tables_path)
  train_cols, eval_cols = load_split(examples_dir, "train"), load_split(examples_dir, "eval")
  sampler = None
  if mode != "no_graph":
    if not graph_dir:
      raise ValueError(f"model.mode={mode} needs the graph directory (build-graph output)")
    sampler = make_sampler(config, graph_dir, tables)
  inputs = Inputs(config, train_cols, eval_cols, sampler, tables)
  logging.info("train: mode=%s, %d train / %d eval examples, %d steps per epoch",
               mode, len(train_cols["user_id"]), len(eval_cols["user_id"]),
               inputs.steps_per_epoch())

  model = E2EGRec(tables, config)
  model.compile(optimizer=tf.keras.optimizers.Adam(config.train.learning_rate))
  # Build the model's variables before restoring (optimizer slots and GradNorm
  # state are restored when they are created, at the first step).
  first = next(iter(inputs.train(0, use_cache=False).take(1)))
  model(first)
  model.balancer.loss_weights()
  step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
  pretrained = tf.Variable(False, trainable=False, name="pretrained")
  checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, step=step_var,
                                   pretrained=pretrained)
  manager = tf.train.CheckpointManager(checkpoint, os.path.join(out_dir, "checkpoints"),
                                       max_to_keep=2)
  if manager.latest_checkpoint:
    checkpoint.restore(manager.latest_checkpoint)
    logging.info("train: resumed from %s at step %d", manager.latest_checkpoint,
                 int(step_var.numpy()))
  run_log = RunLog(out_dir)
  timing = {}

  if mode == "two_stage":
    t0 = time.time()
    if not bool(pretrained.numpy()):
      steps = two_stage.pretrain(
          model, lambda e: inputs.train(e, use_cache=False), config.train.pretrain_epochs,
          config.train.learning_rate,
          log=lambda s, logs: (s % config.train.log_every_steps == 0 and
                               run_log.write(s, logs)))
      pretrained.assign(True)
      timing["pretrain_steps"] = steps
    timing["pretrain_s"] = time.time() - t0
    t0 = time.time()
    if os.path.exists(os.path.join(out_dir, two_stage.CACHE_FILE)) and manager.latest_checkpoint:
      cache = two_stage.EmbeddingCache.load(out_dir)
    else:
      cache = two_stage.precompute(model, sampler, tables, [train_cols, eval_cols],
                                   config.train.batch_size)
      cache.save(out_dir)
      manager.save(checkpoint_number=int(step_var.numpy()))
    inputs.cache_fn = cache.lookup_fn(tables)
    timing["precompute_s"] = time.time() - t0

  timing["input_examples_per_s"] = _input_throughput(inputs.train(0))
  per_epoch = inputs.steps_per_epoch()
  total_steps = per_epoch * config.train.epochs
  if config.train.max_train_steps:
    total_steps = min(total_steps, config.train.max_train_steps)
  train_fn = tf.function(model.train_step, input_signature=[inputs.train(0).element_spec])
  history, best = [], None
  train_time, train_examples = 0.0, 0
  t_train = time.time()
  while int(step_var.numpy()) < total_steps:
    step = int(step_var.numpy())
    epoch, skip = divmod(step, per_epoch)
    window_start, window_examples = time.time(), 0
    for batch in inputs.train(epoch, skip):
      logs = train_fn(batch)
      step = int(step_var.assign_add(1).numpy())
      n = int(tf.shape(batch["user_id"])[0])
      window_examples += n
      train_examples += n
      if step % config.train.log_every_steps == 0:
        elapsed = time.time() - window_start
        train_time += elapsed
        logs = dict(logs, **{"throughput/train_examples_per_s": window_examples / elapsed})
        run_log.write(step, logs)
        window_start, window_examples = time.time(), 0
      if step % config.train.checkpoint_every_steps == 0:
        manager.save(checkpoint_number=step)
      if on_step is not None:
        on_step(step)
      if step >= total_steps or step % per_epoch == 0:
        break
    train_time += time.time() - window_start
    manager.save(checkpoint_number=step)
    if step % per_epoch == 0 or step >= total_steps:
      metrics = evaluate(model, inputs, eval_cols)
      metrics["epoch"] = math.ceil(step / per_epoch)
      metrics["wall_s"] = time.time() - started
      history.append(metrics)
      run_log.write(step, {f"eval/{k}": v for k, v in metrics.items()
                           if isinstance(v, float) and not math.isnan(v)})
      logging.info("train: step %d eval mean GAUC %.4f mean AUC %.4f", step,
                   metrics["mean_gauc"], metrics["mean_auc"])
      if best is None or metrics["mean_gauc"] > best["mean_gauc"]:
        best = metrics
  timing["train_s"] = time.time() - t_train
  if best is None:  # Resumed after the last step: evaluate what was restored.
    best = evaluate(model, inputs, eval_cols)
    history.append(best)
  final = dict(history[-1])
  final["best_mean_gauc"] = best["mean_gauc"]
  final["best_epoch"] = best.get("epoch")
  final["time_to_best_s"] = best.get("wall_s")
  final["train_examples_per_s"] = train_examples / train_time if train_time else None
  final.update(timing)
  final["mode"] = mode
  final["history"] = [{k: v for k, v in h.items()} for h in history]

  model.save_weights(os.path.join(out_dir, "weights", "model"))
  plot_weights(run_log.records(), os.path.join(out_dir, "gradnorm_weights.png"))
  with open(os.path.join(out_dir, contracts.RUN_METRICS_FILE), "w") as f:
    f.write(metrics_lib.to_json(final))
  with open(os.path.join(out_dir, "metrics.md"), "w") as f:
    f.write(metrics_lib.to_markdown(final, model.binary_tasks, model.regression_tasks))
  return TrainResult(model=model, metrics=final, sampler=sampler, tables=tables)


def train(config: Config, examples_dir: str, graph_dir: str | None, out_dir: str) -> dict:
  """Trains one model and returns its eval metrics (see `build_and_train`)."""
  return build_and_train(config, examples_dir, graph_dir, out_dir).metrics


def command(args, config: Config) -> int:
  metrics = train(config, args.examples, args.graph, args.out)
  print(metrics_lib.to_markdown(metrics, BINARY_TASKS, REGRESSION_TASKS))
  return 0
