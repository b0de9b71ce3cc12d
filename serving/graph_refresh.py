"""Graph refresh: a trained model serves with today's graph, without retraining.

    refresh_graph(model_dir, data_dir, out_dir, config) -> Refresh

`model_dir` is a training run directory (`e2e-grec train --out`): its
`config.yaml`, `weights/model` and the `node_tables.npz` it trained with.
`data_dir` holds the logs in the KuaiRand layout from the model's training
start through the newest day. `out_dir` is the versioned model directory that
the server polls (`<serving root>/<model name>`, where the Pusher pushes).

What a refresh does (no training step runs):

1. `prepare` the logs of the model's training start through `through` (default:
   the newest day in the logs), with the same validation and quarantine.
2. Extend the node tables (`vocab.build(..., reference=trained tables)`): users,
   videos, authors, tags and music seen since training get rows with their side
   features, encoded with the training statistics and codes.
3. `build_graph` over the whole window: edges through `through`, each dated.
4. Rebuild the model on the extended tables and copy every trained weight into
   it. ID-embedding rows are gathered by each node's trained index, so a known
   node keeps its embedding and a new one gets the out-of-vocabulary row: the
   GNN encodes it from its side features and its (new) neighbours.
5. Export the SavedModel to a hidden staging directory inside `out_dir`, then
   rename it to the next version number: the server (which only loads numbered
   directories) picks it up like any pushed version, and nothing else in
   `out_dir` is touched, whatever fails.

The TFX form (`e2e-grec run --refresh-from`, pipeline/graph_refresh.py) runs
steps 1-3 (`build_refreshed_graph`) and 4 (`export_refreshed`) as two
components with the schema gate between them, and the Pusher does step 5.

The leakage rule is the sampler's and holds unchanged: a request on day D sees
only edges dated before D, so an interaction of day d added by the refresh is
visible to requests from day d + 1 on, never on day d or before.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import time
from typing import Mapping, Sequence

import e2e_grec  # noqa: F401  (legacy Keras before TensorFlow)
import numpy as np
import pandas as pd
import tensorflow as tf

from e2e_grec import config as config_lib
from e2e_grec import contracts
from e2e_grec.datasets import examples as examples_lib
from e2e_grec.datasets import kuairand, prepare as prepare_lib, vocab
from e2e_grec.datasets import node_tables as node_tables_lib
from e2e_grec.datasets.dates import date_of, day_of
from e2e_grec.datasets.labels import BINARY_TASKS, REGRESSION_TASKS
from e2e_grec.datasets.node_tables import NodeTables
from e2e_grec.graph import builder
from e2e_grec.graph.sampler import SubgraphSampler
from e2e_grec.graph.sampling_index import SamplingIndex
from e2e_grec.models import task_selection
from e2e_grec.models.e2e_grec import E2EGRec
from e2e_grec.serving import export

# Written into each refreshed version, where TF Serving ignores extra files.
REPORT_FILE = os.path.join("assets.extra", "refresh_report.json")
# Beside the refreshed graph: what `RefreshedGraph.load` needs besides the tables.
REFRESHED_GRAPH_FILE = "refreshed_graph.json"
STAGING_PREFIX = ".refresh-"
# `prepare` needs an eval window after the training one; with no `through`
# the training window is open-ended, so the newest day of the logs ends it.
_OPEN_END = "2999-12-30"


class RefreshError(ValueError):
  """A refresh input is missing, malformed or does not fit the trained model."""


@dataclasses.dataclass(frozen=True)
class TrainedModel:
  """What a refresh reads from a training run directory."""
  model_dir: str
  config: config_lib.Config
  arrays: dict[str, np.ndarray]
  weights: str

  @classmethod
  def load(cls, model_dir: str) -> "TrainedModel":
    paths = {name: os.path.join(model_dir, name)
             for name in (contracts.RUN_CONFIG_FILE, contracts.NODE_TABLES_FILE)}
    missing = [p for p in paths.values() if not os.path.exists(p)]
    weights = os.path.join(model_dir, contracts.RUN_WEIGHTS)
    if not tf.io.gfile.glob(weights + ".index"):
      missing.append(weights + ".index")
    if missing:
      raise RefreshError(f"{model_dir} is not a trained model directory (`e2e-grec train "
                         f"--out`): missing {', '.join(missing)}")
    config = config_lib.load(paths[contracts.RUN_CONFIG_FILE])
    if config.model.mode == "no_graph":
      raise RefreshError(f"{paths[contracts.RUN_CONFIG_FILE]}: model.mode is no_graph; "
                         "a model without a graph has nothing to refresh")
    return cls(model_dir, config,
               node_tables_lib.load_arrays(paths[contracts.NODE_TABLES_FILE]),
               weights)

  @property
  def tables_path(self) -> str:
    return os.path.join(self.model_dir, contracts.NODE_TABLES_FILE)

  def selection(self) -> tuple[task_selection.Selection, int] | None:
    """The run's `export.task_selection` and its last eval's step, from its
    eval history; None for a run without one (it serves its last weights)."""
    path = os.path.join(self.model_dir, contracts.RUN_EVAL_HISTORY_FILE)
    if not os.path.exists(path):
      return None
    with open(path) as f:
      records = [json.loads(line) for line in f if line.strip()]
    if not records:
      return None
    return (task_selection.select(records, self.config.export.task_selection,
                                  BINARY_TASKS, REGRESSION_TASKS), records[-1]["step"])


@dataclasses.dataclass(frozen=True)
class RefreshedGraph:
  """The extended node tables (in `examples_dir`) and the graph through `through`."""
  examples_dir: str
  graph_dir: str
  arrays: dict[str, np.ndarray]
  data_dir: str
  through: str
  new_nodes: dict[str, int]
  edges: dict[str, int]
  seconds: float

  def save(self) -> None:
    """Writes what `load` needs beside the tables into `graph_dir`."""
    with open(os.path.join(self.graph_dir, REFRESHED_GRAPH_FILE), "w") as f:
      json.dump({"data_dir": self.data_dir, "through": self.through,
                 "new_nodes": self.new_nodes, "edges": self.edges, "seconds": self.seconds},
                f, indent=2)

  @classmethod
  def load(cls, examples_dir: str, graph_dir: str) -> "RefreshedGraph":
    path = os.path.join(graph_dir, REFRESHED_GRAPH_FILE)
    if not os.path.exists(path):
      raise RefreshError(f"{path} is missing: {graph_dir} is not a refreshed graph")
    with open(path) as f:
      saved = json.load(f)
    return cls(examples_dir, graph_dir, node_tables_lib.load_arrays(
        os.path.join(examples_dir, contracts.NODE_TABLES_FILE)), **saved)


@dataclasses.dataclass
class Refresh:
  """A finished refresh: the exported version and the in-process model serving it."""
  version_dir: str
  report: dict
  model: E2EGRec
  sampler: SubgraphSampler
  tables: NodeTables


def window_config(trained: config_lib.Config, data_dir: str, through: str | None,
                  config: config_lib.Config) -> config_lib.Config:
  """The trained config with the window widened to `through` (open-ended if None).

  Everything that shapes the weights (model, sampling, graph, data parsing)
  stays the trained one; `config` only contributes serving, export and Beam
  options.
  """
  end = through or _OPEN_END
  after = str(date_of(day_of(end) + 1))
  return trained.replace(**{
      "data.data_dir": data_dir, "data.train_end": end, "data.eval_start": after,
      "data.eval_end": after, "serving": dataclasses.asdict(config.serving),
      "export": dataclasses.asdict(config.export),
      "graph.beam_args": list(config.graph.beam_args)})


def _check_fits(trained: TrainedModel, arrays: Mapping[str, np.ndarray]) -> None:
  """The extended tables have the trained node sets and feature columns."""
  for key, value in trained.arrays.items():
    if key.endswith("_names") or key.endswith("_sizes"):
      if key not in arrays or not np.array_equal(arrays[key], value):
        raise RefreshError(
            f"{trained.tables_path}: {key} is {value.tolist()} but the refresh data gives "
            f"{arrays[key].tolist() if key in arrays else 'nothing'}: the side tables do "
            "not fit the model (different columns or category values)")
    elif key.endswith("/ids") and key not in arrays:
      raise RefreshError(f"{trained.tables_path}: node set {key.split('/')[0]!r} of the "
                         "model is missing from the refreshed tables")


def build_refreshed_graph(trained: TrainedModel, data_dir: str, examples_dir: str,
                          graph_dir: str, through: str | None, config: config_lib.Config,
                          beam_args: Sequence[str] = ()) -> RefreshedGraph:
  """Steps 1-3 of the module docstring, into `examples_dir` and `graph_dir`.

  `beam_args` are applied after `config.graph.beam_args` (a pipeline's own).
  """
  started = time.time()
  trained_end = day_of(trained.config.data.train_end)
  if through is not None and day_of(through) <= trained_end:
    raise RefreshError(f"refresh window is empty: through={through} is not after the "
                       f"model's training window, which ends {trained.config.data.train_end}")
  window = window_config(trained.config, data_dir, through, config)
  report = prepare_lib.prepare(window, data_dir, examples_dir)
  last_day = report.splits[contracts.TRAIN_SPLIT]["last_day"]
  if day_of(last_day) <= trained_end:
    raise RefreshError(
        f"refresh window is empty: the logs in {data_dir} end {last_day}, not after the "
        f"model's training window ({trained.config.data.train_start}.."
        f"{trained.config.data.train_end}); add newer log_standard_*.csv files")

  layout = kuairand.discover(data_dir)
  quarantine = kuairand.Quarantine()  # Already checked and written by `prepare`.
  users, _ = kuairand.read_table(layout.user_features, kuairand.USER_SPEC, quarantine)
  videos, _ = kuairand.read_table(layout.video_features, kuairand.VIDEO_SPEC, quarantine)
  history, _ = kuairand.read_history(layout.user_history, quarantine)
  rows = examples_lib.read_examples(contracts.split_file(examples_dir, contracts.TRAIN_SPLIT))
  columns = contracts.ID_FEATURES + (contracts.TAB,)
  arrays = vocab.build(pd.DataFrame({k: rows[k] for k in columns}),
                       users, videos, history, day_of(trained.config.data.train_start),
                       reference=trained.arrays)
  _check_fits(trained, arrays)
  node_tables_lib.save_arrays(os.path.join(examples_dir, contracts.NODE_TABLES_FILE), arrays)

  manifest = builder.build_graph(window, examples_dir, graph_dir, beam_args=beam_args)
  new_nodes = {ns: int(len(arrays[f"{ns}/ids"]) - len(trained.arrays[f"{ns}/ids"]))
               for ns in contracts.NODE_SETS if f"{ns}/ids" in trained.arrays}
  refreshed = RefreshedGraph(examples_dir, graph_dir, arrays, data_dir, last_day, new_nodes,
                             {name: es.edges for name, es in manifest.edge_sets.items()},
                             round(time.time() - started, 2))
  refreshed.save()
  return refreshed


def _built_model(tables: NodeTables, config: config_lib.Config,
                 sampler: SubgraphSampler) -> E2EGRec:
  """The model with its variables created, by one call on an isolated OOV example.

  Variable shapes depend on the tables and on the graph's node and edge sets,
  not on the values: index 0 (OOV) is valid in any tables.
  """
  model = E2EGRec(tables, config)
  oov = tf.constant([-1], tf.int64)
  zero = tf.zeros([1], tf.int64)
  graph = sampler(oov, oov, zero)
  model({contracts.USER_ID: oov, contracts.VIDEO_ID: oov, contracts.TAB: oov,
         contracts.HOUR: zero, contracts.DAY: zero, contracts.TIME_MS: zero,
         contracts.GRAPH_INPUT: graph})
  if model.gfae is not None:  # Its decoder is only called in training.
    model.gfae(model.encoder(graph), model.gfae.sample_masks(graph))
  return model


def _id_embedding_rows(variable: tf.Variable, target_shape: tf.TensorShape,
                       grown: Mapping[str, tuple[int, int, np.ndarray]]) -> np.ndarray:
  """Rows of a trained ID embedding to gather for the refreshed tables.

  The node set is the one whose (trained, refreshed) sizes are the variable's;
  if several grown node sets have the same sizes, the one the Keras layer is
  named after (`<node set>_id`) decides.
  """
  sets = [ns for ns, (old, new, _) in grown.items()
          if (old, new) == (variable.shape[0], target_shape[0])]
  if len(sets) > 1:
    sets = [ns for ns in sets if f"{ns}_id/" in variable.name]
  if len(sets) != 1 or variable.shape[1:] != target_shape[1:]:
    raise RefreshError(f"weight {variable.name} has shape {variable.shape} in the trained "
                       f"model but {target_shape} on the refreshed tables")
  return grown[sets[0]][2]


def _weights(model: E2EGRec, tables: NodeTables) -> list[tf.Variable]:
  """The model's own variables, without the node tables it reads."""
  tables_variables = {id(v) for v in tables.variables}
  return [v for v in model.variables if id(v) not in tables_variables]


def transplant(trained: TrainedModel, arrays: Mapping[str, np.ndarray],
               sampler: SubgraphSampler,
               snapshot: tuple[int, task_selection.Selection] | None = None) -> E2EGRec:
  """Step 4: the trained weights (the last ones, or the task-selection
  `snapshot` of a step) in a model built on the extended `arrays`."""
  config = trained.config
  old_tables, new_tables = NodeTables(trained.arrays), NodeTables(dict(arrays))
  old = _built_model(old_tables, config, sampler)
  try:
    if snapshot is None:
      status = old.load_weights(trained.weights)
      status.expect_partial()  # The optimizer's slots are not needed to serve.
      status.assert_existing_objects_matched()
    else:
      task_selection.Snapshots(trained.model_dir).restore(old, *snapshot)
  except (AssertionError, ValueError, FileNotFoundError, tf.errors.OpError) as e:
    raise RefreshError(f"{trained.weights}: the weights do not fit the model of "
                       f"{trained.model_dir}/{contracts.RUN_CONFIG_FILE}: {e}") from None
  new = _built_model(new_tables, config, sampler)
  old_weights, new_weights = _weights(old, old_tables), _weights(new, new_tables)
  if len(old_weights) != len(new_weights):
    raise RefreshError(
        f"the refreshed graph does not fit the model of {trained.model_dir}: "
        f"{len(old_weights)} weights when built on its own tables, "
        f"{len(new_weights)} on the refreshed graph (different node or edge sets?)")
  # Per grown node set: sizes, and the trained index of every refreshed node
  # (0, the OOV row, for new ones).
  grown = {ns: (old_tables.sizes[ns], new_tables.sizes[ns],
                np.concatenate([[0], vocab.index(trained.arrays, ns, arrays[f"{ns}/ids"])]))
           for ns in old_tables.node_sets if old_tables.sizes[ns] != new_tables.sizes[ns]}
  for source, target in zip(old_weights, new_weights):
    value = source.numpy()
    if source.shape != target.shape:
      value = value[_id_embedding_rows(source, target.shape, grown)]
    target.assign(value)
  return new


def selected_transplant(trained: TrainedModel, arrays: Mapping[str, np.ndarray],
                        sampler: SubgraphSampler) -> E2EGRec | task_selection.TaskSelectedModel:
  """`transplant` of the model the run exports: each task from the eval its
  `export.task_selection` chose, as `training.run` builds it."""
  chosen = trained.selection()
  steps = sorted(set(chosen[0].steps.values())) if chosen else []
  if not chosen or steps == [chosen[1]]:
    return transplant(trained, arrays, sampler)
  selection, last = chosen
  return task_selection.TaskSelectedModel(
      {step: transplant(trained, arrays, sampler, None if step == last else (step, selection))
       for step in steps}, selection.steps)


def export_refreshed(trained: TrainedModel, refreshed: RefreshedGraph,
                     config: config_lib.Config, saved_model_dir: str,
                     version: int | None = None) -> Refresh:
  """Step 4, and the SavedModel with its report (`REPORT_FILE`) at `saved_model_dir`.

  `config` contributes `serving` and `export` only; `version` is recorded in
  the report when the caller knows it (the Pusher picks its own).
  """
  started = time.time()
  tables = NodeTables(refreshed.arrays)
  sampler = SubgraphSampler(SamplingIndex.load(refreshed.graph_dir), tables,
                            trained.config.sampling)
  model = selected_transplant(trained, refreshed.arrays, sampler)
  seconds = {"graph": refreshed.seconds, "weights": time.time() - started}
  serving_config = trained.config.replace(serving=dataclasses.asdict(config.serving),
                                          export=dataclasses.asdict(config.export))
  export.export_saved_model(model, sampler, tables, serving_config, saved_model_dir)
  seconds["export"] = time.time() - started - seconds["weights"]
  report = {
      "model_dir": trained.model_dir, "data_dir": refreshed.data_dir, "version": version,
      "trained_through": trained.config.data.train_end,
      "graph_window": [trained.config.data.train_start, refreshed.through],
      "new_nodes": refreshed.new_nodes, "edges": refreshed.edges,
      "phase_seconds": {k: round(v, 2) for k, v in seconds.items()},
      "seconds": round(sum(seconds.values()), 2)}
  os.makedirs(os.path.join(saved_model_dir, os.path.dirname(REPORT_FILE)), exist_ok=True)
  with open(os.path.join(saved_model_dir, REPORT_FILE), "w") as f:
    json.dump(report, f, indent=2)
  return Refresh(saved_model_dir, report, model, sampler, tables)


def refresh_graph(model_dir: str, data_dir: str, out_dir: str, config: config_lib.Config,
                  through: str | None = None) -> Refresh:
  """Refreshes the graph of a trained model and exports it as a new version.

  Args:
    model_dir: the training run directory (config.yaml, weights/, node_tables.npz).
    data_dir: KuaiRand-layout logs from the model's training start on.
    out_dir: the versioned model directory the server polls; created if absent.
    config: contributes `serving` (signatures) and `graph.beam_args` only; the
      rest comes from the model's own config.
    through: last day (YYYY-MM-DD) of the refreshed graph; default the newest.

  Returns:
    The new version's directory, its report (also in `assets.extra/`) and the
    in-process model, sampler and tables it serves.
  """
  trained = TrainedModel.load(os.path.abspath(model_dir))
  os.makedirs(out_dir, exist_ok=True)
  version = export.next_version(out_dir)
  staging = os.path.join(out_dir, f"{STAGING_PREFIX}{version}")
  try:
    work = os.path.join(staging, "work")
    refreshed = build_refreshed_graph(trained, os.path.abspath(data_dir),
                                      os.path.join(work, "examples"),
                                      os.path.join(work, "graph"), through, config)
    result = export_refreshed(trained, refreshed, config,
                              os.path.join(staging, "saved_model"), version)
    version_dir = os.path.join(out_dir, str(version))
    os.rename(result.version_dir, version_dir)  # Atomic: never half a version.
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  logging.info("refresh: version %d in %s, graph through %s, new nodes %s, %.1f s",
               version, version_dir, refreshed.through, refreshed.new_nodes,
               result.report["seconds"])
  return dataclasses.replace(result, version_dir=version_dir)


def command(args: argparse.Namespace, config: config_lib.Config) -> int:
  """`e2e-grec refresh-graph --model DIR --data DIR --out DIR [--through YYYY-MM-DD]`.

  `--out` is the serving directory, as for `e2e-grec export`: the version goes
  to `<out>/<serving.model_name>/<version>`.
  """
  out_dir = os.path.join(args.out, config.serving.model_name)
  result = refresh_graph(args.model, args.data, out_dir, config, args.through)
  print(json.dumps(result.report, indent=2))
  print(f"serve it with: e2e-grec serve --models {args.out}")
  return 0
