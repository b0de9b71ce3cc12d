"""The TFX pipeline end to end on tiny synthetic data: push, cache, bad input.

One module-scoped pipeline root serves the first run and the cached rerun;
each bad-input case gets its own root so nothing is cached across cases.
"""
import glob
import io
import json
import os
import re
import shutil

import e2e_grec  # noqa: F401  (legacy Keras before TensorFlow)
import pandas as pd
import pytest
import tensorflow as tf

from e2e_grec import config as config_lib
from e2e_grec import contracts
from e2e_grec.datasets import synthetic
from e2e_grec.pipeline import default_config
from e2e_grec.pipeline import pipeline as pipeline_lib
from e2e_grec.pipeline import run as run_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "synthetic.impressions=3000", "synthetic.users=300", "synthetic.videos=200",
    "synthetic.authors=50", "synthetic.musics=40",
    # Pipeline mechanics, not model quality: two steps of a tiny model.
    "train.epochs=1", "train.batch_size=512", "train.max_train_steps=2",
    "train.loss_balancer=fixed", "model.gfae=false", "sampling.fanouts=[4]",
    "model.gnn_hidden_dim=8", "model.gnn_layers=1", "model.embedding_dim=8",
    "model.bottom_units=[16]", "model.tower_units=[8]", "model.cross_layers=1",
]
UPSTREAM = ("ExampleGen", "ImportSchemaGen", "StatisticsGen", "ExampleValidator",
            "AnomaliesGate", "GraphBuilder", "BaselineTrainer", "Trainer")


def tiny_config(root, *overrides: str) -> config_lib.Config:
  return config_lib.load(None, TINY + [f"pipeline.root={root}/pipeline",
                                       f"pipeline.serving_dir={root}/serving", *overrides])


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
  """The same config run twice; a negative margin makes a tiny model blessable."""
  root = tmp_path_factory.mktemp("pipeline")
  config = tiny_config(root, "eval.blessing_margin=-1.0")
  first_out, second_out = io.StringIO(), io.StringIO()
  first = run_lib.run(config, out=first_out)
  second = run_lib.run(config, out=second_out)
  return config, first, first_out.getvalue(), second, second_out.getvalue()


def test_default_config_file_is_generated_from_config_defaults():
  with open(os.path.join(REPO, "configs", "default.yaml")) as f:
    text = f.read()
  assert text == default_config.render(config_lib.Config()), (
      "configs/default.yaml is stale: python -m e2e_grec.pipeline.default_config "
      "> configs/default.yaml")
  assert config_lib.load(os.path.join(REPO, "configs", "default.yaml")) == config_lib.Config()


def test_first_run_pushes_a_blessed_savedmodel(two_runs):
  config, first, progress, _, _ = two_runs
  assert {n.node_id: n.status for n in first.nodes} == {
      **{node: "ran" for node in UPSTREAM + ("Evaluator", "Pusher")},
      "LatestBlessedModelResolver": "resolved"}
  for node in UPSTREAM + ("Evaluator", "Pusher"):
    assert f"{node}" in progress and first.executions[node].state == "ran"

  evaluation = first.executions["Evaluator"].uri("evaluation")
  with open(os.path.join(evaluation, contracts.EVALUATION_METRICS_FILE)) as f:
    report = json.load(f)
  candidate, baseline = report["models"][:2]
  assert (candidate["mode"], baseline["mode"]) == ("e2e", "no_graph")
  # The decision follows the metrics: margin -1 means any GAUC beats the baseline.
  assert report["blessed"] is (candidate["metrics"]["mean_gauc"]
                               > baseline["metrics"]["mean_gauc"] - 1.0) is True
  blessing = first.executions["Evaluator"].outputs["blessing"][0]
  assert blessing.custom_properties["blessed"].int_value == 1
  assert os.path.exists(os.path.join(first.executions["Evaluator"].uri("blessing"), "BLESSED"))

  pushed = first.executions["Pusher"].outputs["pushed_model"][0].custom_properties
  destination = pushed["pushed_destination"].string_value
  assert pushed["pushed"].int_value == 1
  assert os.path.dirname(destination) == os.path.join(config.pipeline.serving_dir,
                                                      config.serving.model_name)
  assert os.path.basename(destination).isdigit()  # a TF Serving version directory
  loaded = tf.saved_model.load(destination)
  assert {"serving_default", "rank"} <= set(loaded.signatures)

  assert config_lib.load(os.path.join(first.root, contracts.RUN_CONFIG_FILE)) == config

  text = run_lib.summary(first)
  assert "mean_gauc" in text and "BLESSED" in text and destination in text
  assert "tensorboard --logdir_spec=" in text


def test_trainers_train_where_a_rerun_resumes(two_runs):
  """Each Trainer trains under <root>/trainer_runs/<id>/<inputs+config digest>, the
  directory a rerun after a killed Trainer finds its checkpoints in; the
  execution's ModelRun gets a copy."""
  config, first, _, _, _ = two_runs
  for node in ("Trainer", "BaselineTrainer"):
    (run_dir,) = glob.glob(os.path.join(os.path.abspath(config.pipeline.root),
                                        pipeline_lib.TRAINER_RUNS_DIR, node, "*"))
    assert os.path.isdir(os.path.join(run_dir, "checkpoints"))
    model_run = first.executions[node].uri("model_run")
    assert sorted(os.listdir(model_run)) == sorted(os.listdir(run_dir))


def test_resumable_run_dir_is_keyed_by_inputs_and_config():
  from e2e_grec.components.trainer import executor
  custom = {executor.RESUME_ROOT_KEY: "/r", executor.EXAMPLES_DIR_KEY: "/e",
            executor.GRAPH_DIR_KEY: "/g", contracts.CONFIG_KEY: "a: 1"}
  same = executor.resumable_run_dir(dict(custom))
  assert same == executor.resumable_run_dir(custom) and same.startswith("/r/")
  for key, value in ((executor.EXAMPLES_DIR_KEY, "/e2"), (executor.GRAPH_DIR_KEY, ""),
                     (contracts.CONFIG_KEY, "a: 2")):
    assert executor.resumable_run_dir({**custom, key: value}) != same
  assert executor.resumable_run_dir({**custom, executor.RESUME_ROOT_KEY: "gs://b"}) is None
  assert executor.resumable_run_dir({**custom, executor.RESUME_ROOT_KEY: ""}) is None


def test_rerun_uses_the_cache_and_pushes_nothing_new(two_runs):
  config, first, _, second, progress = two_runs
  for node in UPSTREAM:
    assert second.executions[node].state == "cached", node
    assert second.executions[node].outputs == first.executions[node].outputs
  assert "cached in" in progress
  # The last blessed model is now the candidate itself: evaluated again, not re-pushed.
  assert second.executions["Evaluator"].state == "ran"
  blessing = second.executions["Evaluator"].outputs["blessing"][0]
  assert blessing.custom_properties["blessed"].int_value == 0
  assert "already the last blessed" in blessing.custom_properties[
      "blessing_message"].string_value
  versions = os.listdir(os.path.join(config.pipeline.serving_dir, config.serving.model_name))
  assert len(versions) == 1


def _broken_logs(tmp_path, column: str, values) -> str:
  """Tiny synthetic logs whose `column` of the impression log is replaced."""
  data_dir = str(tmp_path / "logs")
  synthetic.generate(tiny_config(tmp_path).synthetic, data_dir)
  (log_file,) = glob.glob(os.path.join(data_dir, "log_standard_*.csv"))
  log = pd.read_csv(log_file, dtype=str, keep_default_na=False)
  log[column] = values(log[column])
  log.to_csv(log_file, index=False)
  return data_dir


# The pinned schema with tab ids capped at 0: the tiny logs' tabs are valid to
# `prepare` but drift out of this schema's domain.
_TAB_CAPPED = ("int_domain { min: 0 is_categorical: true }",
               "int_domain { min: 0 max: 0 is_categorical: true }")


@pytest.mark.parametrize("column, values, schema_edit, node, expected", [
    # Unparseable everywhere: prepare's row validation quarantines every row.
    ("is_click", lambda c: "yes", None, "ExampleGen", "malformed"),
    # Well-formed values outside the schema's domain: ExampleValidator's anomaly.
    # (`prepare` quarantines negative ids and non-0/1 flags itself, so the drift
    # is made on the schema's side.)
    ("tab", lambda c: c, _TAB_CAPPED, "AnomaliesGate", "'tab'"),
])
def test_broken_column_stops_the_run_at_validation(tmp_path, monkeypatch, column, values,
                                                   schema_edit, node, expected):
  data_dir = _broken_logs(tmp_path, column, values)
  if schema_edit:
    with open(pipeline_lib.default_schema_file()) as f:
      schema = f.read()
    assert schema_edit[0] in schema
    edited = tmp_path / "examples.pbtxt"
    edited.write_text(schema.replace(*schema_edit, 1))
    monkeypatch.setattr(pipeline_lib, "default_schema_file", lambda: str(edited))
  config = tiny_config(tmp_path, f"data.data_dir={data_dir}")
  out = io.StringIO()
  with pytest.raises(run_lib.PipelineFailed) as failure:
    run_lib.run(config, out=out)
  assert failure.value.node_id == node
  assert expected in str(failure.value)
  if node == "ExampleGen":  # the quarantine outlives the failed execution and names the column
    (quarantine,) = re.findall(r"listed in (\S+quarantine\.csv)", str(failure.value))
    assert column in pd.read_csv(quarantine)["reason"].iloc[0]
  assert "✗ [" in out.getvalue() and node in out.getvalue()
  assert not os.path.exists(config.pipeline.serving_dir)
  executions = run_lib.latest_executions(
      os.path.join(config.pipeline.root, run_lib.METADATA_FILE), config.pipeline.name,
      ["GraphBuilder", "Trainer"])
  assert executions == {}  # nothing past validation ran


def test_a_second_run_on_a_root_in_use_fails_at_once(tmp_path):
  config = tiny_config(tmp_path)
  os.makedirs(config.pipeline.root)
  with run_lib.root_lock(os.path.abspath(config.pipeline.root)):
    with pytest.raises(run_lib.RootInUse, match=f"pid {os.getpid()}"):
      run_lib.run(config, out=io.StringIO())
  assert not os.path.exists(os.path.join(config.pipeline.root, run_lib.METADATA_FILE))


def test_executions_left_running_by_a_dead_run_are_marked_abandoned(tmp_path):
  from ml_metadata.proto import metadata_store_pb2
  from tfx.dsl.compiler import constants
  from tfx.orchestration import metadata

  path = str(tmp_path / run_lib.METADATA_FILE)
  with metadata.Metadata(metadata.sqlite_metadata_connection_config(path)) as m:
    store = m.store
    context_type = store.put_context_type(
        metadata_store_pb2.ContextType(name=constants.NODE_CONTEXT_TYPE_NAME))
    (context,) = store.put_contexts([metadata_store_pb2.Context(
        type_id=context_type, name="p.Trainer")])
    execution_type = store.put_execution_type(metadata_store_pb2.ExecutionType(name="T"))
    states = [metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.RUNNING]
    ids = store.put_executions([metadata_store_pb2.Execution(
        type_id=execution_type, last_known_state=s) for s in states])
    store.put_attributions_and_associations(
        [], [metadata_store_pb2.Association(context_id=context, execution_id=i) for i in ids])
  assert run_lib.abandon_dead_executions(path, "p", ["Trainer", "Pusher"], "died") == [
      f"Trainer (execution {ids[1]})"]
  executions = run_lib.latest_executions(path, "p", ["Trainer"])
  assert executions["Trainer"].state == "abandoned"
  assert run_lib.abandon_dead_executions(path, "p", ["Trainer"], "died") == []


def _model(tmp_path, name: str, artifact_id: int, mean_gauc: float, examples: str = "/ex"):
  """A Model artifact with a SavedModel stand-in and the Trainer's eval record."""
  from tfx.types import standard_artifacts
  from tfx.utils import path_utils
  from e2e_grec.components.trainer import executor as trainer_executor

  model = standard_artifacts.Model()
  model.uri, model.id = str(tmp_path / name), artifact_id
  serving = path_utils.serving_model_path(model.uri)
  os.makedirs(serving)
  with open(os.path.join(serving, "saved_model.pb"), "w") as f:
    f.write(name)
  trainer_executor.write_model_metrics(model.uri, trainer_executor.ModelMetrics(
      mode="e2e", examples=examples, metrics={"mean_gauc": mean_gauc}))
  return model


def _push(model, serving_dir: str):
  """The project's Pusher executor on `model`, blessed; returns the version directory."""
  from tfx.components.evaluator import constants
  from tfx.proto import pusher_pb2
  from tfx.types import standard_artifacts
  from tfx.utils import proto_utils
  from e2e_grec.components.pusher import executor as pusher_executor

  blessing, pushed = standard_artifacts.ModelBlessing(), standard_artifacts.PushedModel()
  blessing.uri, pushed.uri = model.uri + "_blessing", model.uri + "_pushed"
  blessing.set_int_custom_property(constants.ARTIFACT_PROPERTY_BLESSED_KEY, 1)
  destination = pusher_pb2.PushDestination(
      filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=serving_dir))
  pusher_executor.Executor().Do(
      {"model": [model], "model_blessing": [blessing]}, {"pushed_model": [pushed]},
      {"push_destination": proto_utils.proto_to_json(destination)})
  return pushed.get_string_custom_property(pusher_executor.PUSHED_DESTINATION_PROPERTY)


def _evaluate(tmp_path, candidate, baseline, serving_dir: str) -> dict:
  from tfx.types import standard_artifacts
  from e2e_grec.components.evaluator import executor as evaluator_executor

  evaluation, blessing = standard_artifacts.ModelEvaluation(), standard_artifacts.ModelBlessing()
  evaluation.uri, blessing.uri = str(tmp_path / "evaluation"), str(tmp_path / "blessing")
  config = config_lib.Config().replace(**{"eval.blessing_margin": 0.0})
  evaluator_executor.Executor().Do(
      {"model": [candidate], "baseline_model": [baseline]},
      {"evaluation": [evaluation], "blessing": [blessing]},
      {contracts.CONFIG_KEY: contracts.encode_config(config),
       contracts.PUSHED_MODELS_DIR_KEY: serving_dir})
  with open(os.path.join(evaluation.uri, contracts.EVALUATION_METRICS_FILE)) as f:
    return json.load(f)


def test_without_a_resolver_the_evaluator_compares_with_the_pushed_record(tmp_path):
  """The KFP path: the Pusher leaves the eval record in each version, and the
  Evaluator reads the newest one that has it (a graph refresh has none)."""
  serving = str(tmp_path / "serving" / "e2e_grec")
  baseline = _model(tmp_path, "baseline", 1, 0.60)
  assert _evaluate(tmp_path, _model(tmp_path, "first", 2, 0.65), baseline,
                   serving)["blessed"]  # nothing pushed yet: the baseline only
  incumbent = _model(tmp_path, "incumbent", 3, 0.70)
  version = _push(incumbent, serving)
  with open(os.path.join(version, contracts.PUSHED_METRICS_FILE)) as f:
    assert json.load(f)["model_uri"] == incumbent.uri
  refreshed = os.path.join(serving, str(int(os.path.basename(version)) + 1))
  shutil.copytree(os.path.join(incumbent.uri, "Format-Serving"), refreshed)

  report = _evaluate(tmp_path, _model(tmp_path, "weaker", 4, 0.65), baseline, serving)
  assert not report["blessed"] and "last blessed 0.7000" in report["message"]
  assert _evaluate(tmp_path, _model(tmp_path, "stronger", 5, 0.75), baseline,
                   serving)["blessed"]
  assert "already the last blessed" in _evaluate(tmp_path, incumbent, baseline,
                                                 serving)["message"]
