"""One typed configuration for data, graph, sampling, model, training and serving.

A run's configuration is `Config` defaults, then an optional YAML file, then
`section.key=value` overrides from the command line. An unknown key, a value
of the wrong type or out of range, inconsistent keys and malformed YAML are all
a `ConfigError` whose one-line message names the key (or the file and line).
The resolved config is saved with every run's artifacts (`Config.to_yaml`).
"""
from __future__ import annotations

import dataclasses
import datetime
import os
import types
import typing
from typing import Any, Mapping, Sequence

import yaml


class ConfigError(ValueError):
  """A configuration key is unknown, ill-typed, out of range or inconsistent, or a
  config file is unreadable; the message names the key or the file and line."""


def default_shared_data_dir() -> str | None:
  """The shared KuaiRand-Pure copy beside the project root, if present."""
  here = os.path.dirname(os.path.abspath(__file__))
  candidate = os.path.join(os.path.dirname(here), "shared", "data", "kuairand_pure")
  return candidate if os.path.isdir(candidate) else None


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where the logs are and how they become labelled, temporally split examples."""
  # A directory in the official KuaiRand-Pure layout. Empty: synthetic data.
  data_dir: str = ""
  train_start: str = "2022-04-25"
  train_end: str = "2022-05-04"
  eval_start: str = "2022-05-05"
  eval_end: str = "2022-05-06"
  # `skip` = play_time_ms below this threshold.
  skip_threshold_ms: int = 3000
  # Fraction of malformed rows above which `prepare` fails.
  max_bad_fraction: float = 0.01
  # Read at most this many log rows (0 = all); for quick experiments.
  max_rows: int = 0
  # Also read log_random_*.csv (randomly exposed impressions, `is_rand`=1) as
  # examples. Off by default: their exposure policy differs from the standard log.
  include_random_log: bool = False


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  """Shape of the synthetic KuaiRand-layout data used when no data_dir is set."""
  users: int = 3000
  videos: int = 1500
  authors: int = 400
  tags: int = 60
  musics: int = 300
  tabs: int = 15
  days: int = 12
  impressions: int = 60000
  history_length: int = 50
  start_date: str = "2022-04-25"
  seed: int = 0
  # Co-watching communities: users mostly watch, and prefer, their community's
  # videos, and follow its authors; this is the signal only a graph reveals.
  communities: int = 8
  # Weight of the graph-structured terms (community match, followed author)
  # relative to the latent-factor term in the engagement score.
  graph_signal: float = 1.0


@dataclasses.dataclass(frozen=True)
class GraphConfig:
  """Which node and edge sets the Beam graph builder materialises."""
  behaviours: tuple[str, ...] = ("impression", "click", "long_view", "like")
  include_history: bool = True
  # Video-video co-engagement: pair a user's long-view/like events with the
  # previous `co_engage_window` such events; keep the top-K per video and day.
  co_engage_window: int = 5
  co_engage_top_k: int = 10
  # Key shards of the columnar aggregation (by user, then by video): the
  # unit of parallelism; raise it with the data size or worker count. Keep a
  # shard's columns well under 512 MB on multi-process runners: at 10M
  # impressions, 16 shards lost co-engagement pairs on the 2-process
  # DirectRunner (run to run) while 64 built the 1-process graph exactly.
  shards: int = 16
  # Extra Beam pipeline options, e.g. ("--runner=FlinkRunner",). The
  # DirectRunner is always the classic one (never Prism).
  beam_args: tuple[str, ...] = ("--runner=DirectRunner",)


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """Subgraph sampling around each example's user and video."""
  # Fan-out per hop, applied to every edge set leaving the frontier; one hop
  # per GNN round (len(fanouts) == model.gnn_layers). One hop of 5 is the
  # configuration whose quality the README reports; two hops [10, 5] cost about
  # ten times more per e2e example (benchmarks/results/bench_training_cost.json)
  # with no measured quality gain on KuaiRand.
  fanouts: tuple[int, ...] = (5,)
  # Edge sets sampled (in either direction); per-edge-set fan-out overrides.
  edge_sets: tuple[str, ...] = ("click", "long_view", "like", "history",
                                "authored_by", "tagged", "co_engage")
  fanout_overrides: dict[str, int] = dataclasses.field(default_factory=dict)
  seed: int = 0
  # Where subgraphs are sampled: "trainer" (in tf.data, from the in-memory
  # sampling index) or "beam" (before training, by the BeamSubgraphSampler, for
  # graphs beyond a trainer's memory; graph/beam_sampling.py).
  where: str = "trainer"
  # where=beam: the directory of pre-sampled subgraphs the trainer reads (the
  # BeamSubgraphSampler's `subgraphs` output, or graph/beam_sampling.py's).
  subgraphs_dir: str = ""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The GNN encoder, GFAE and multi-task ranker."""
  mode: str = "e2e"  # e2e | two_stage | no_graph
  gnn: str = "graph_sage"  # graph_sage | gatv2 | hgt
  gnn_hidden_dim: int = 32
  gnn_layers: int = 1  # = len(sampling.fanouts)
  gnn_dropout: float = 0.1
  embedding_dim: int = 16
  bottom: str = "dcn"  # dcn | mmoe
  bottom_units: tuple[int, ...] = (128, 64)
  cross_layers: int = 2
  num_experts: int = 4
  tower_units: tuple[int, ...] = (32,)
  fusion_level1: bool = True
  fusion_level2: bool = True
  gfae: bool = True
  gfae_mask_rate: float = 0.3
  gfae_loss: str = "sce"  # sce | mse
  gfae_sce_gamma: float = 2.0
  # The decoder scores at most this many masked nodes per node set and batch,
  # drawn uniformly (0 = all): an unbiased estimate of the reconstruction loss
  # that cuts GFAE's CPU (a quarter of an e2e step when every masked node is
  # decoded) to a third. Off: at 512 on KuaiRand, e2e's eval mean GAUC fell
  # from 0.6284 to 0.6233 (3 seeds) and two_stage's from 0.6282 to 0.6169 (seed 0).
  gfae_max_decoded_nodes: int = 0


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Optimisation, loss balancing, logging and checkpoints."""
  batch_size: int = 1024
  epochs: int = 2
  learning_rate: float = 2e-3
  loss_balancer: str = "gradnorm"  # gradnorm | fixed | uncertainty
  gradnorm_alpha: float = 1.5
  gradnorm_learning_rate: float = 0.025
  # Update the GradNorm weights every N steps (1 = every step, as in the
  # paper); each update costs one extra backward pass per loss.
  gradnorm_every_steps: int = 5
  # Fixed loss weights (also GradNorm's initial weights); missing = 1.0.
  loss_weights: dict[str, float] = dataclasses.field(default_factory=dict)
  # two_stage (and e2e with warm_start): epochs of GNN pretraining (GFAE +
  # link prediction, `models/two_stage.py`).
  pretrain_epochs: int = 1
  # e2e: pretrain the GNN as two_stage does, then train it end to end with the
  # ranker from that learned structure instead of from scratch. Other modes
  # ignore it (two_stage always pretrains; no_graph has no GNN), so a
  # warm-start config still runs their baselines.
  warm_start: bool = False
  seed: int = 0
  # Stop after this many training steps in total (0 = every epoch in full).
  max_train_steps: int = 0
  # TensorBoard / train_log.jsonl every N steps; a checkpoint every M steps
  # (and after every epoch), so a killed run resumes close to where it died.
  log_every_steps: int = 20
  checkpoint_every_steps: int = 200
  # "first,last": write a TensorBoard profiler trace of these training steps
  # (to the run's tensorboard/); "" = no trace.
  profile_steps: str = ""
  # tf.distribute strategy: default (one process) | multi_worker_mirrored
  # (synchronous data parallel, every worker trains on its shard of each global
  # batch) | parameter_server (tables sharded over PS tasks, workers sample and
  # train against them). The cluster comes from TF_CONFIG (see kubeflow/README.md).
  strategy: str = "default"
  # parameter_server: a variable is split over up to all PS tasks into shards
  # of at least this many bytes (TF's MinSizePartitioner); smaller ones stay whole.
  ps_min_shard_bytes: int = 256 * 1024


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """How a trained model is judged and blessed."""
  # Bless only if mean GAUC beats the no_graph baseline (or the last blessed
  # model) by at least this margin.
  blessing_margin: float = 0.0
  baseline_mode: str = "no_graph"
  # The metric (a key of the trainer's eval metrics) compared for blessing.
  metric: str = "mean_gauc"


@dataclasses.dataclass(frozen=True)
class ExportConfig:
  """What the exported SavedModel's `rank` signature computes (part of the trainer's config)."""
  # Ranking score = sum of weight * task prediction; missing task = 0.
  task_weights: dict[str, float] = dataclasses.field(
      default_factory=lambda: {"click": 1.0, "long_view": 1.0, "like": 2.0,
                               "skip": -1.0, "stay": 0.2})
  max_candidates: int = 1000
  # Which evaluated checkpoint serves each task (`models/task_selection.py`):
  # last | best_mean (best mean GAUC) | per_task (each task's best eval metric;
  # one model copy per distinct epoch in the SavedModel). best_mean serves one
  # model; on KuaiRand per_task changed only stay RMSE (1.1979 -> 1.1945) for a
  # second encoder + ranker pass per request.
  task_selection: str = "best_mean"


@dataclasses.dataclass(frozen=True)
class ServingConfig:
  """The served model's name and the local TF-Serving-protocol server."""
  model_name: str = "e2e_grec"
  host: str = "127.0.0.1"
  grpc_port: int = 8500
  rest_port: int = 8501
  # Seconds between polls of the model directory for new versions.
  poll_seconds: float = 2.0


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  """Where a TFX pipeline run keeps its artifacts and metadata."""
  name: str = "e2e-grec"
  # Local runs: artifacts, MLMD (metadata.sqlite) and the resolved config.
  root: str = "runs/e2e-grec"
  # The Pusher writes versioned SavedModels to <serving_dir>/<serving.model_name>.
  serving_dir: str = "runs/serving"
  # Rerun components whose inputs and parameters are unchanged from the cache.
  enable_cache: bool = True
  # Beam options of every Beam-based component (StatisticsGen, GraphBuilder...).
  # Pin the runner: the newest DirectRunner may pick Prism, which needs a download.
  beam_args: tuple[str, ...] = ("--runner=DirectRunner", "--direct_num_workers=1",
                                "--direct_running_mode=in_memory")
  # Kubeflow: the pipeline image and the remote pipeline root (models are pushed
  # to <kubeflow_root>/serving/<serving.model_name>).
  kubeflow_image: str = "ghcr.io/e2e-grec/e2e-grec:0.1.0"
  kubeflow_root: str = "gs://YOUR_BUCKET/e2e-grec"


@dataclasses.dataclass(frozen=True)
class ResourcesConfig:
  """CPU, memory and GPUs of each Kubeflow component's pod, by component id."""
  # vCPUs per component (request and limit); "default" for components not named.
  cpu: dict[str, float] = dataclasses.field(default_factory=lambda: {
      "default": 1.0, "StatisticsGen": 2.0, "GraphBuilder": 2.0, "Trainer": 4.0,
      "BaselineTrainer": 4.0})
  # Memory in GiB per component (request and limit); "default" as above.
  memory_gib: dict[str, float] = dataclasses.field(default_factory=lambda: {
      "default": 4.0, "GraphBuilder": 8.0, "Trainer": 16.0, "BaselineTrainer": 8.0})
  # GPUs per component (none unless named); such pods need the GPU image
  # (kubeflow/Dockerfile.gpu as pipeline.kubeflow_image).
  gpus: dict[str, int] = dataclasses.field(default_factory=dict)
  # The GPU's Kubernetes resource name (open-source KFP) and Vertex AI machine
  # accelerator type.
  kfp_gpu_resource: str = "nvidia.com/gpu"
  vertex_gpu_type: str = "NVIDIA_TESLA_T4"


@dataclasses.dataclass(frozen=True)
class Config:
  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  synthetic: SyntheticConfig = dataclasses.field(default_factory=SyntheticConfig)
  graph: GraphConfig = dataclasses.field(default_factory=GraphConfig)
  sampling: SamplingConfig = dataclasses.field(default_factory=SamplingConfig)
  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
  train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
  eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
  export: ExportConfig = dataclasses.field(default_factory=ExportConfig)
  serving: ServingConfig = dataclasses.field(default_factory=ServingConfig)
  pipeline: PipelineConfig = dataclasses.field(default_factory=PipelineConfig)
  resources: ResourcesConfig = dataclasses.field(default_factory=ResourcesConfig)

  def to_dict(self) -> dict[str, Any]:
    return _plain(dataclasses.asdict(self))

  def to_yaml(self) -> str:
    return yaml.safe_dump(self.to_dict(), sort_keys=False)

  def save(self, path: str) -> None:
    with open(path, "w") as f:
      f.write(self.to_yaml())

  def replace(self, **sections: Any) -> "Config":
    """Returns a copy with whole sections or `section.key` values replaced."""
    return from_dict(_merge(self.to_dict(), _nest(sections)))


def _plain(value: Any) -> Any:
  if isinstance(value, dict):
    return {k: _plain(v) for k, v in value.items()}
  if isinstance(value, (tuple, list)):
    return [_plain(v) for v in value]
  return value


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
  nested: dict[str, Any] = {}
  for key, value in flat.items():
    if dataclasses.is_dataclass(value):
      value = _plain(dataclasses.asdict(value))
    parts = key.split(".")
    node = nested
    for part in parts[:-1]:
      node = node.setdefault(part, {})
    node[parts[-1]] = value
  return nested


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
  merged = dict(base)
  for key, value in update.items():
    if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
      merged[key] = _merge(merged[key], value)
    else:
      merged[key] = value
  return merged


def _coerce(value: Any, hint: Any, where: str) -> Any:
  """Checks `value` against a type hint, converting YAML lists to tuples."""
  origin = typing.get_origin(hint)
  if origin in (typing.Union, types.UnionType):
    for option in typing.get_args(hint):
      try:
        return _coerce(value, option, where)
      except ConfigError:
        pass
    raise ConfigError(f"{where}: {value!r} is not a {hint}")
  if hint is type(None):
    if value is None:
      return None
    raise ConfigError(f"{where}: expected null, got {value!r}")
  if origin is tuple:
    if not isinstance(value, (list, tuple)):
      raise ConfigError(f"{where}: expected a list, got {value!r}")
    (item,) = typing.get_args(hint)[:1]
    return tuple(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
  if origin is dict:
    if not isinstance(value, Mapping):
      raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    key_t, val_t = typing.get_args(hint)
    return {_coerce(k, key_t, where): _coerce(v, val_t, f"{where}.{k}")
            for k, v in value.items()}
  if hint is str and isinstance(value, datetime.date):
    return value.isoformat()  # YAML reads 2022-04-25 as a date.
  if hint is float and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if hint is bool and not isinstance(value, bool):
    raise ConfigError(f"{where}: expected true/false, got {value!r}")
  if hint in (int, float, str) and (not isinstance(value, hint) or
                                    isinstance(value, bool)):
    raise ConfigError(
        f"{where}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
  return value


def _build(cls: type, values: Mapping[str, Any], where: str) -> Any:
  if not isinstance(values, Mapping):
    raise ConfigError(f"{where or 'config'}: expected a mapping, got {values!r}")
  hints = typing.get_type_hints(cls)
  names = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - names)
  if unknown:
    raise ConfigError(
        f"unknown config key(s) {', '.join(where + k for k in unknown)}; "
        f"known keys in {where.rstrip('.') or 'config'}: {', '.join(sorted(names))}")
  kwargs = {}
  for name, value in values.items():
    hint = hints[name]
    if dataclasses.is_dataclass(hint):
      kwargs[name] = _build(hint, value, f"{where}{name}.")
    else:
      kwargs[name] = _coerce(value, hint, where + name)
  return cls(**kwargs)


def from_dict(values: Mapping[str, Any]) -> Config:
  """Builds a Config, rejecting unknown keys and ill-typed values by name."""
  config = _build(Config, values, "")
  _validate(config)
  return config


MODES = ("e2e", "two_stage", "no_graph")
TASK_SELECTIONS = ("last", "best_mean", "per_task")
# Allowed values of every choice key.
_CHOICES = {
    "model.mode": MODES,
    "sampling.where": ("trainer", "beam"),
    "model.gnn": ("graph_sage", "gatv2", "hgt"),
    "model.bottom": ("dcn", "mmoe"),
    "model.gfae_loss": ("sce", "mse"),
    "train.loss_balancer": ("gradnorm", "fixed", "uncertainty"),
    "train.strategy": ("default", "multi_worker_mirrored", "parameter_server"),
    "eval.baseline_mode": MODES,
    "export.task_selection": TASK_SELECTIONS,
}
# Range of every numeric key (of each item for lists and mappings):
# (lowest, highest, whether the lowest itself is allowed); None = unbounded.
_AT_LEAST_1 = (1, None, True)
_NON_NEGATIVE = (0, None, True)
_POSITIVE = (0, None, False)
_RANGES = {
    **dict.fromkeys((
        "synthetic.users", "synthetic.videos", "synthetic.authors", "synthetic.tags",
        "synthetic.musics", "synthetic.tabs", "synthetic.days", "synthetic.impressions",
        "synthetic.communities", "graph.co_engage_window", "graph.co_engage_top_k",
        "graph.shards", "sampling.fanouts", "model.gnn_hidden_dim", "model.gnn_layers",
        "model.embedding_dim", "model.bottom_units", "model.num_experts",
        "model.tower_units", "train.batch_size", "train.epochs",
        "train.gradnorm_every_steps", "train.log_every_steps",
        "train.checkpoint_every_steps", "train.ps_min_shard_bytes",
        "export.max_candidates"), _AT_LEAST_1),
    **dict.fromkeys((
        "data.skip_threshold_ms", "data.max_rows", "synthetic.history_length",
        "synthetic.graph_signal", "sampling.fanout_overrides", "model.cross_layers",
        "model.gfae_max_decoded_nodes",
        "train.gradnorm_alpha", "train.loss_weights", "train.pretrain_epochs",
        "train.max_train_steps"), _NON_NEGATIVE),
    **dict.fromkeys((
        "train.learning_rate", "train.gradnorm_learning_rate", "model.gfae_sce_gamma",
        "serving.poll_seconds"), _POSITIVE),
    "data.max_bad_fraction": (0, 1, True),
    "model.gnn_dropout": (0, 0.99, True),
    "model.gfae_mask_rate": (0, 0.99, True),
    "serving.grpc_port": (0, 65535, True),
    "serving.rest_port": (0, 65535, True),
}
_DATES = ("data.train_start", "data.train_end", "data.eval_start", "data.eval_end",
          "synthetic.start_date")


def _value(config: Config, key: str) -> Any:
  section, name = key.split(".")
  return getattr(getattr(config, section), name)


def _check_range(key: str, value: Any, bounds: tuple[Any, Any, bool]) -> None:
  low, high, low_allowed = bounds
  if isinstance(value, Mapping):
    for name, item in value.items():
      _check_range(f"{key}.{name}", item, bounds)
    return
  if isinstance(value, tuple):
    if not value:
      raise ConfigError(f"{key}: must not be empty")
    for i, item in enumerate(value):
      _check_range(f"{key}[{i}]", item, bounds)
    return
  if value < low or (value == low and not low_allowed) or (high is not None and value > high):
    wanted = (f">= {low}" if low_allowed else f"> {low}") + (
        f" and <= {high}" if high is not None else "")
    raise ConfigError(f"{key}: must be {wanted}, got {value!r}")


def _validate(config: Config) -> None:
  """Choices, ranges, dates and the relations between keys, each error naming its key."""
  for key, allowed in _CHOICES.items():
    if _value(config, key) not in allowed:
      raise ConfigError(f"{key}: {_value(config, key)!r} is not one of {', '.join(allowed)}")
  for key, bounds in _RANGES.items():
    _check_range(key, _value(config, key), bounds)
  for key in _DATES:
    try:
      datetime.date.fromisoformat(_value(config, key))
    except ValueError:
      raise ConfigError(f"{key}: {_value(config, key)!r} is not a valid YYYY-MM-DD "
                        "date") from None
  data = config.data
  if not data.train_start <= data.train_end < data.eval_start <= data.eval_end:
    raise ConfigError(
        "data: splits must satisfy train_start <= train_end < eval_start <= eval_end, "
        f"got {data.train_start}..{data.train_end} and {data.eval_start}..{data.eval_end}")
  if len(config.sampling.fanouts) != config.model.gnn_layers:
    # Round r of message passing brings hop r+1 to the seeds: a hop without a
    # round is sampled for nothing, a round without a hop reaches no further.
    raise ConfigError(
        f"sampling.fanouts: one fan-out per GNN round, so {len(config.sampling.fanouts)} "
        f"hop(s) {list(config.sampling.fanouts)} need model.gnn_layers="
        f"{len(config.sampling.fanouts)}, got {config.model.gnn_layers}")
  if config.model.gnn == "hgt" and config.model.gnn_hidden_dim % 4:
    raise ConfigError(f"model.gnn_hidden_dim: HGT's 4 heads need a multiple of 4, got "
                      f"{config.model.gnn_hidden_dim}")


class _YamlLoader(yaml.SafeLoader):
  """SafeLoader that reads dates as text: config dates are strings, checked by key
  (so `2022-13-01` is an error naming the key, not a crash in the YAML parser)."""


_YamlLoader.add_constructor("tag:yaml.org,2002:timestamp", _YamlLoader.construct_yaml_str)


def parse_override(text: str) -> tuple[str, Any]:
  """Parses `section.key=value`; the value is read as YAML (`[10, 5]`, `true`)."""
  if "=" not in text or "." not in text.split("=", 1)[0]:
    raise ConfigError(f"override {text!r} is not of the form section.key=value")
  key, raw = text.split("=", 1)
  try:
    return key.strip(), yaml.load(raw, _YamlLoader) if raw.strip() else ""
  except yaml.YAMLError as error:
    raise ConfigError(f"override {text!r}: the value is not valid YAML "
                      f"({_yaml_problem(error)})") from None


def _yaml_problem(error: yaml.YAMLError) -> str:
  """A YAML error's reason in one line, without its multi-line source excerpt."""
  return " ".join(str(getattr(error, "problem", None) or error).split())


def read_yaml(path: str) -> dict[str, Any]:
  """The mapping in a YAML config file; ConfigError names the file (and line)."""
  try:
    with open(path) as f:
      values = yaml.load(f, _YamlLoader)
  except OSError as error:
    raise ConfigError(f"{path}: cannot read the config file: {error.strerror}") from None
  except yaml.YAMLError as error:
    mark = getattr(error, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
    raise ConfigError(f"{where}: invalid YAML: {_yaml_problem(error)}") from None
  if values is None:
    return {}
  if not isinstance(values, Mapping):
    raise ConfigError(f"{path}: expected a mapping of config sections, got "
                      f"{type(values).__name__}")
  return values


def load(path: str | None = None, overrides: Sequence[str] = ()) -> Config:
  """Defaults, then the YAML file at `path`, then `section.key=value` overrides."""
  values: dict[str, Any] = Config().to_dict()
  if path:
    values = _merge(values, read_yaml(path))
  values = _merge(values, _nest(dict(parse_override(o) for o in overrides)))
  return from_dict(values)
