"""The data contracts between the layers: one home for every shared name.

Artifact layouts (file and directory names), the packaged schema paths, the
components' config exec-property and its encoding, and the feature and
readout names that the examples, the sampler, the model and serving agree on.
Every layer imports these instead of repeating literals; docs/ARCHITECTURE.md
describes what the files hold. Pure Python (no TensorFlow), so any layer,
including a serving client, can import it.
"""
from __future__ import annotations

import os
from typing import Final

import yaml

from e2e_grec import config as config_lib

# --- Packaged schemas --------------------------------------------------------

_PACKAGE_DIR: Final = os.path.dirname(os.path.abspath(__file__))
# The TFMD schema of the prepared tf.Examples (ImportSchemaGen's input), inside
# the package (the Kubeflow image joins it to its own install path).
EXAMPLES_SCHEMA_RELPATH: Final = os.path.join("schemas", "examples.pbtxt")
EXAMPLES_SCHEMA_PATH: Final = os.path.join(_PACKAGE_DIR, EXAMPLES_SCHEMA_RELPATH)
# The TF-GNN GraphSchema template the graph builder fills in.
GRAPH_SCHEMA_TEMPLATE_PATH: Final = os.path.join(_PACKAGE_DIR, "schemas",
                                                 "graph_schema.pbtxt")

# --- Prepared examples (`prepare` output = the TFX `Examples` artifact) -------

# TFX's directory prefix of a split inside an Examples artifact.
SPLIT_PREFIX: Final = "Split-"
# The split names, in the order `prepare` writes them.
TRAIN_SPLIT: Final = "train"
EVAL_SPLIT: Final = "eval"
SPLITS: Final = (TRAIN_SPLIT, EVAL_SPLIT)
# The one GZIP TFRecord file of tf.Examples inside each split directory.
EXAMPLES_FILE: Final = "data_tfrecord-00000-of-00001.gz"
# Vocabularies and normalised side features (arrays keyed `<node_set>/<name>`).
NODE_TABLES_FILE: Final = "node_tables.npz"
# The validated pre-period history as (user_id, video_id, day) raw-id columns.
HISTORY_FILE: Final = "history.npz"
# Rows in / out / quarantined per file, step and split (JSON).
PREPARE_REPORT_FILE: Final = "prepare_report.json"
# Every malformed input row with file, line and reason (CSV).
QUARANTINE_FILE: Final = "quarantine.csv"


def split_dir(examples_dir: str, split: str) -> str:
  """The directory of one split inside a prepared-examples directory."""
  return os.path.join(examples_dir, SPLIT_PREFIX + split)


def split_file(examples_dir: str, split: str) -> str:
  """The GZIP TFRecord file that `prepare` writes for one split."""
  return os.path.join(split_dir(examples_dir, split), EXAMPLES_FILE)


def split_glob(examples_dir: str, split: str) -> str:
  """A glob of every example file of one split (any writer's shard names)."""
  return os.path.join(split_dir(examples_dir, split), "*.gz")


# --- Graph (`build-graph` output = the `Graph` artifact) ----------------------

# The graph's TF-GNN GraphSchema, with the unigraph file paths.
GRAPH_SCHEMA_FILE: Final = "graph_schema.pbtxt"
# TF-GNN unigraph tables: `<dir>/<set>.tfrecord` per node or edge set.
NODES_DIR: Final = "nodes"
EDGES_DIR: Final = "edges"
# The CSR index of the in-memory sampler (arrays keyed `<edge_set>/<name>`).
SAMPLING_INDEX_FILE: Final = "sampling_index.npz"
# Counts per node and edge set, degree statistics, dropped rows (JSON).
MANIFEST_FILE: Final = "manifest.json"
# The degree distribution plot of every edge set.
DEGREES_PLOT_FILE: Final = "degrees.png"
# Prefix of the reverse of a non-symmetric edge set (`rev_click`).
REVERSE_PREFIX: Final = "rev_"

# --- Subgraphs (TF-GNN Beam sampler output = the `Subgraphs` artifact) --------

# Serialized GraphTensors, one per seed; their schema is GRAPH_SCHEMA_FILE.
SUBGRAPHS_FILE: Final = "subgraphs.tfrecord"
# The seed node indices, as a unigraph node table.
SEEDS_FILE: Final = "seeds.tfrecord"
# The TF-GNN SamplingSpec that was executed (text proto).
SAMPLING_SPEC_FILE: Final = "sampling_spec.pbtxt"
# TF-GNN's sampling programs and their artifacts.
SAMPLING_ARTIFACTS_DIR: Final = "artifacts"

# --- Trained model (the `Model` artifact) and a training run ------------------

# Beside Format-Serving in the Model artifact: what the Evaluator compares.
MODEL_METRICS_FILE: Final = "eval_metrics.json"
# A training run's final metrics (and history) in its output directory.
RUN_METRICS_FILE: Final = "metrics.json"
# Append-only, one JSON record per eval of the run (what task selection reads).
RUN_EVAL_HISTORY_FILE: Final = "eval_history.jsonl"
# One JSON object per logged step (train scalars, and `eval/*` after each epoch).
RUN_LOG_FILE: Final = "train_log.jsonl"
# The same metrics as a Markdown table.
RUN_METRICS_TABLE_FILE: Final = "metrics.md"
# The resolved config a run (or a pipeline root) was made with.
RUN_CONFIG_FILE: Final = "config.yaml"
# The trained weights (`model.save_weights` prefix) inside a run directory.
RUN_WEIGHTS: Final = os.path.join("weights", "model")
# The Evaluator's comparison in the `ModelEvaluation` artifact: JSON and a table.
EVALUATION_METRICS_FILE: Final = "metrics.json"
EVALUATION_TABLE_FILE: Final = "metrics.md"
# Inside each pushed version (where TF Serving ignores extra files): the
# pushed model's eval record, so an Evaluator can compare with the served model
# from the serving directory alone, without an MLMD resolver (open-source KFP).
PUSHED_METRICS_FILE: Final = os.path.join("assets.extra", MODEL_METRICS_FILE)

# --- Example features and the sampled subgraph --------------------------------

USER_ID: Final = "user_id"
VIDEO_ID: Final = "video_id"
TAB: Final = "tab"
HOUR: Final = "hour"
DAY: Final = "day"
TIME_MS: Final = "time_ms"
# Raw ids of an example; side features are looked up in the node tables.
ID_FEATURES: Final = (USER_ID, VIDEO_ID)
# Context of an impression (int64): surface, hour of day, days since epoch, time.
CONTEXT_FEATURES: Final = (TAB, HOUR, DAY, TIME_MS)
# The model input key of the sampled GraphTensor (absent for no_graph models).
GRAPH_INPUT: Final = "graph"

# Graph node sets (index 0 of each is the out-of-vocabulary bucket).
NODE_SETS: Final = ("user", "video", "author", "tag", "music")
# Node sets rooted at each example: its user and its video.
SEED_NODE_SETS: Final = ("user", "video")
# Node feature of every sampled node set: the node index into the node tables.
NODE_ID_FEATURE: Final = "id"
# Edge feature of user-video edge sets: the surface of the interaction.
EDGE_TAB_FEATURE: Final = TAB
# Auxiliary node set of the structured readout: one node per example.
READOUT: Final = "_readout"


def readout_edge_set(node_set: str) -> str:
  """The readout edge set whose sources are each example's `node_set` seed."""
  return f"{READOUT}/{node_set}"


# --- Component channel and execution-property keys ----------------------------
# (TFX's own keys -- examples, model, blessing... -- come from
# `tfx.types.standard_component_specs`; these are the project's.)

# The one exec-property (and Trainer custom_config) key of the resolved config.
CONFIG_KEY: Final = "config_yaml"
# ExampleGen: the KuaiRand-layout directory, whether to generate it, its digest.
DATA_DIR_KEY: Final = "data_dir"
SYNTHETIC_KEY: Final = "synthetic"
DATA_FINGERPRINT_KEY: Final = "data_fingerprint"
# AnomaliesGate: where the schema came from (named in its error).
SCHEMA_SOURCE_KEY: Final = "schema_source"
# The `Graph` channel (GraphBuilder output; BeamSubgraphSampler and Trainer input).
GRAPH_KEY: Final = "graph"
# BeamSubgraphSampler: its `Subgraphs` output, the seeds' split and node set.
SUBGRAPHS_KEY: Final = "subgraphs"
SPLIT_KEY: Final = "split"
SEED_NODE_SET_KEY: Final = "seed_node_set"
# Evaluator: the optional last blessed model channel, or instead the Pusher's
# versioned base directory to read the last pushed model's record from.
LAST_BLESSED_MODEL_KEY: Final = "last_blessed_model"
PUSHED_MODELS_DIR_KEY: Final = "pushed_models_dir"
# RefreshedGraphBuilder: the last day of the refreshed graph ("" = the newest logged).
THROUGH_KEY: Final = "through"


def encode_config(config: config_lib.Config) -> str:
  """The config as a component exec-property value (YAML text)."""
  return config.to_yaml()


def decode_config(text: str) -> config_lib.Config:
  """The config of an exec-property value; a ConfigError names the property."""
  try:
    values = yaml.safe_load(text)
  except yaml.YAMLError as error:
    raise config_lib.ConfigError(
        f"exec property {CONFIG_KEY!r} is not valid YAML: {error}") from None
  return config_lib.from_dict(values or {})
