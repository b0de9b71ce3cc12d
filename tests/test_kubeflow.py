"""The Kubeflow Pipelines v2 spec: components, image, parameters, artifact wiring."""
import json
import os

import e2e_grec  # noqa: F401  (legacy Keras before TensorFlow)
import pytest
import yaml

from e2e_grec import config as config_lib
from e2e_grec.pipeline import kubeflow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE = "registry.example.com/team/e2e-grec:test"
COMPONENTS = {"ExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator",
              "AnomaliesGate", "GraphBuilder", "Trainer", "BaselineTrainer", "Evaluator",
              "Pusher"}


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
  config = config_lib.load(None, [
      f"pipeline.kubeflow_image={IMAGE}", "pipeline.kubeflow_root=gs://bucket/root",
      "data.data_dir=gs://bucket/kuairand", "train.epochs=3", "eval.blessing_margin=0.002",
      "pipeline.beam_args=[--runner=DataflowRunner, --project=p, --region=europe-west4]"])
  out = tmp_path_factory.mktemp("kfp") / "pipeline.json"
  kubeflow.compile_pipeline(config, str(out))
  with open(out) as f:
    return json.load(f)


def _tasks(spec):
  return spec["pipelineSpec"]["root"]["dag"]["tasks"]


def _parameter(task, name):
  return task["inputs"]["parameters"][name]["runtimeValue"]["constantValue"]["stringValue"]


def _source(task, key):
  ref = task["inputs"]["artifacts"][key]["taskOutputArtifact"]
  return ref["producerTask"], ref["outputArtifactKey"]


def test_every_component_runs_in_the_pipeline_image(spec):
  tasks = _tasks(spec)
  assert COMPONENTS <= set(tasks)
  assert any(name.startswith("LatestBlessedModelResolver") for name in tasks)
  executors = spec["pipelineSpec"]["deploymentSpec"]["executors"]
  for name in COMPONENTS:
    container = executors[f"{name}_executor"]["container"]
    assert container["image"] == IMAGE, name
  assert executors["Trainer_executor"]["container"]["args"][1] == (
      "e2e_grec.components.trainer.executor.Executor")
  assert "--runner=DataflowRunner" in executors["GraphBuilder_executor"]["container"]["args"]
  assert spec["runtimeConfig"]["gcsOutputDirectory"] == "gs://bucket/root"


def test_artifacts_are_wired_between_the_right_components(spec):
  tasks = _tasks(spec)
  assert _source(tasks["StatisticsGen"], "examples") == ("ExampleGen", "examples")
  assert _source(tasks["ExampleValidator"], "statistics") == ("StatisticsGen", "statistics")
  assert _source(tasks["ExampleValidator"], "schema") == ("ImportSchemaGen", "schema")
  assert _source(tasks["AnomaliesGate"], "anomalies") == ("ExampleValidator", "anomalies")
  assert _source(tasks["GraphBuilder"], "examples") == ("ExampleGen", "examples")
  assert _source(tasks["Trainer"], "examples") == ("ExampleGen", "examples")
  assert _source(tasks["Trainer"], "graph") == ("GraphBuilder", "graph")
  assert "graph" not in tasks["BaselineTrainer"]["inputs"]["artifacts"]
  assert _source(tasks["Evaluator"], "model") == ("Trainer", "model")
  assert _source(tasks["Evaluator"], "baseline_model") == ("BaselineTrainer", "model")
  assert _source(tasks["Evaluator"], "last_blessed_model")[0].startswith(
      "LatestBlessedModelResolver")
  assert _source(tasks["Pusher"], "model") == ("Trainer", "model")
  assert _source(tasks["Pusher"], "model_blessing") == ("Evaluator", "blessing")
  # Nothing is built or trained on examples that failed validation.
  for name in ("GraphBuilder", "BaselineTrainer"):
    assert "AnomaliesGate" in tasks[name]["dependentTasks"], name


def test_parameters_carry_the_config(spec):
  tasks = _tasks(spec)
  assert _parameter(tasks["ExampleGen"], "data_dir") == "gs://bucket/kuairand"
  assert _parameter(tasks["ImportSchemaGen"], "schema_file") == os.path.join(
      kubeflow.IMAGE_PACKAGE_DIR, "schemas", "examples.pbtxt")
  trainer = yaml.safe_load(json.loads(_parameter(tasks["Trainer"], "custom_config"))[
      "config_yaml"])
  baseline = yaml.safe_load(json.loads(_parameter(tasks["BaselineTrainer"], "custom_config"))[
      "config_yaml"])
  assert (trainer["model"]["mode"], baseline["model"]["mode"]) == ("e2e", "no_graph")
  assert trainer["train"]["epochs"] == 3
  evaluator = yaml.safe_load(_parameter(tasks["Evaluator"], "config_yaml"))
  assert evaluator["eval"]["blessing_margin"] == 0.002
  destination = json.loads(_parameter(tasks["Pusher"], "push_destination"))
  assert destination["filesystem"]["base_directory"] == "gs://bucket/root/serving/e2e_grec"


def test_committed_spec_is_the_compiled_default(tmp_path):
  """kubeflow/e2e_grec_pipeline.json is what `e2e-grec compile-kubeflow` writes."""
  out = tmp_path / "pipeline.json"
  kubeflow.compile_pipeline(config_lib.Config(), str(out))
  with open(os.path.join(REPO, kubeflow.DEFAULT_OUT)) as f:
    committed = json.load(f)
  assert json.loads(out.read_text()) == committed, (
      "kubeflow/e2e_grec_pipeline.json is stale: rerun `e2e-grec compile-kubeflow`")
