"""The Kubeflow specs: loadable by the kfp SDK, components, image, resources, parameters,
artifact wiring, and the submit path."""
import json
import os

import e2e_grec  # noqa: F401  (legacy Keras before TensorFlow)
import pytest
import yaml
import kfp.client
from kfp import components as kfp_components
from kfp.client import client as kfp_client

from e2e_grec import cli
from e2e_grec import config as config_lib
from e2e_grec.pipeline import kubeflow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE = "registry.example.com/team/e2e-grec:test"
COMPONENTS = {"ExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator",
              "AnomaliesGate", "GraphBuilder", "Trainer", "BaselineTrainer", "Evaluator",
              "Pusher"}
REFRESH_COMPONENTS = {"TrainedModelImporter", "RefreshedGraphBuilder", "StatisticsGen",
                      "ImportSchemaGen", "ExampleValidator", "AnomaliesGate",
                      "RefreshExporter", "Pusher"}
PUSHER_EXECUTOR = "e2e_grec.components.pusher.executor.Executor"
OVERRIDES = [
    "pipeline.kubeflow_root=gs://bucket/root", "data.data_dir=gs://bucket/kuairand",
    "train.epochs=3", "eval.blessing_margin=0.002", "resources.gpus={Trainer: 1}",
    "pipeline.beam_args=[--runner=DataflowRunner, --project=p, --region=europe-west4]"]


@pytest.fixture(scope="module")
def specs(tmp_path_factory):
  """Both targets compiled through the CLI, as a user would (`--image` is a flag)."""
  out = tmp_path_factory.mktemp("kfp")
  paths = {"kfp": str(out / "pipeline.yaml"), "vertex": str(out / "pipeline.json")}
  for target, path in paths.items():
    argv = ["compile-kubeflow", "--target", target, "--out", path, "--image", IMAGE]
    assert cli.main(argv + [f"--set={o}" for o in OVERRIDES]) == 0
  with open(paths["kfp"]) as f:
    kfp_spec = yaml.safe_load(f)
  with open(paths["vertex"]) as f:
    vertex_spec = json.load(f)["pipelineSpec"]
  return paths, {"kfp": kfp_spec, "vertex": vertex_spec}


@pytest.fixture(scope="module")
def refresh_spec(tmp_path_factory):
  """The graph refresh pipeline compiled for KFP through the CLI."""
  path = str(tmp_path_factory.mktemp("kfp_refresh") / "refresh.yaml")
  assert cli.main(["compile-kubeflow", "--pipeline", "graph_refresh", "--out", path,
                   "--image", IMAGE] + [f"--set={o}" for o in OVERRIDES]) == 0
  with open(path) as f:
    return path, yaml.safe_load(f)


def _tasks(spec):
  return spec["root"]["dag"]["tasks"]


def _parameter(task, name):
  return task["inputs"]["parameters"][name]["runtimeValue"]["constant"]


def _source(task, key):
  ref = task["inputs"]["artifacts"][key]["taskOutputArtifact"]
  return ref["producerTask"], ref["outputArtifactKey"]


def test_kfp_spec_loads_with_the_kfp_sdk_and_has_no_resolver(specs):
  paths, parsed = specs
  # What kfp.Client.create_run_from_pipeline_package reads before uploading.
  document = kfp_client._extract_pipeline_yaml(paths["kfp"])  # pylint: disable=protected-access
  assert set(document.pipeline_spec.root.dag.tasks) == COMPONENTS
  assert document.pipeline_spec.default_pipeline_root == "gs://bucket/root"
  component = kfp_components.load_component_from_file(paths["kfp"])
  assert component.component_spec.inputs["data_dir"].default == "gs://bucket/kuairand"
  assert "last_blessed_model" not in _tasks(parsed["kfp"])["Evaluator"]["inputs"]["artifacts"]
  # Vertex implements TFX resolvers: the last blessed model is compared there.
  vertex = _tasks(parsed["vertex"])
  assert any(name.startswith("LatestBlessedModelResolver") for name in vertex)
  assert _source(vertex["Evaluator"], "last_blessed_model")[0].startswith(
      "LatestBlessedModelResolver")


@pytest.mark.parametrize("target", ["kfp", "vertex"])
def test_every_component_runs_in_the_image_with_its_resources(specs, target):
  spec = specs[1][target]
  executors = spec["deploymentSpec"]["executors"]
  for name in COMPONENTS:
    assert executors[f"{name}_executor"]["container"]["image"] == IMAGE, name
  trainer = executors["Trainer_executor"]["container"]
  assert trainer["args"][1] == "e2e_grec.components.trainer.executor.Executor"
  assert "--runner=DataflowRunner" in executors["GraphBuilder_executor"]["container"]["args"]
  resources = trainer["resources"]
  assert (resources["resourceCpuRequest"], resources["resourceMemoryRequest"]) == ("4", "16Gi")
  assert (resources["cpuLimit"], resources["memoryLimit"]) == (4.0, 16.0)
  assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
  assert resources["accelerator"]["resourceCount"] == "1"
  if target == "vertex":
    assert resources["accelerator"]["type"] == "NVIDIA_TESLA_T4"
  pusher = executors["Pusher_executor"]["container"]["resources"]
  assert "accelerator" not in pusher and pusher["resourceCpuLimit"] == "1"


@pytest.mark.parametrize("target", ["kfp", "vertex"])
def test_artifacts_are_wired_between_the_right_components(specs, target):
  tasks = _tasks(specs[1][target])
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
  assert _source(tasks["Pusher"], "model") == ("Trainer", "model")
  assert _source(tasks["Pusher"], "model_blessing") == ("Evaluator", "blessing")
  # Nothing is built or trained on examples that failed validation.
  for name in ("GraphBuilder", "BaselineTrainer"):
    assert "AnomaliesGate" in tasks[name]["dependentTasks"], name


def test_parameters_carry_the_config_and_the_run_time_data_dir(specs):
  tasks = _tasks(specs[1]["kfp"])
  for name in ("ExampleGen", "GraphBuilder"):  # the run-time parameter, not a constant
    assert tasks[name]["inputs"]["parameters"]["data_dir"] == {
        "componentInputParameter": "data_dir"}
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


@pytest.mark.parametrize("pipeline", sorted(kubeflow.PIPELINES))
@pytest.mark.parametrize("target", ["kfp", "vertex"])
def test_committed_spec_is_the_compiled_default(tmp_path, target, pipeline):
  """kubeflow/<pipeline>_<target>.* is what `e2e-grec compile-kubeflow` writes."""
  committed_path = kubeflow.default_out(target, pipeline)
  out = str(tmp_path / os.path.basename(committed_path))
  kubeflow.compile_pipeline(config_lib.Config(), target, out, pipeline)
  with open(out) as fresh, open(os.path.join(REPO, committed_path)) as committed:
    assert fresh.read() == committed.read(), (
        f"{committed_path} is stale: rerun `e2e-grec compile-kubeflow --target {target} "
        f"--pipeline {pipeline}`")


def test_kfp_evaluator_reads_the_last_blessed_model_from_the_pushed_versions(specs):
  """No resolver on KFP: the Evaluator gets the Pusher's directory instead, and
  the Pusher leaves each version's eval record there."""
  kfp_tasks, vertex_tasks = (_tasks(specs[1][target]) for target in ("kfp", "vertex"))
  assert _parameter(kfp_tasks["Evaluator"], "pushed_models_dir") == (
      "gs://bucket/root/serving/e2e_grec")
  assert "pushed_models_dir" not in vertex_tasks["Evaluator"]["inputs"].get("parameters", {})
  for target in ("kfp", "vertex"):
    pusher = specs[1][target]["deploymentSpec"]["executors"]["Pusher_executor"]["container"]
    assert pusher["args"][1] == PUSHER_EXECUTOR


def test_graph_refresh_spec_loads_and_takes_the_trained_run_at_run_time(refresh_spec):
  path, spec = refresh_spec
  document = kfp_client._extract_pipeline_yaml(path)  # pylint: disable=protected-access
  assert set(document.pipeline_spec.root.dag.tasks) == REFRESH_COMPONENTS
  component = kfp_components.load_component_from_file(path)
  inputs = component.component_spec.inputs
  assert inputs["data_dir"].default == "gs://bucket/kuairand"
  assert not inputs["model_run"].optional  # no default: every run names its model
  tasks = _tasks(spec)
  assert tasks["TrainedModelImporter"]["inputs"]["parameters"]["artifact_uri"] == {
      "componentInputParameter": "model_run"}
  assert tasks["RefreshedGraphBuilder"]["inputs"]["parameters"]["data_dir"] == {
      "componentInputParameter": "data_dir"}
  for name in ("RefreshedGraphBuilder", "RefreshExporter"):
    assert _source(tasks[name], "model_run") == ("TrainedModelImporter", "result")
  assert _source(tasks["StatisticsGen"], "examples") == ("RefreshedGraphBuilder", "examples")
  assert _source(tasks["RefreshExporter"], "graph") == ("RefreshedGraphBuilder", "graph")
  assert "AnomaliesGate" in tasks["RefreshExporter"]["dependentTasks"]
  assert _source(tasks["Pusher"], "model") == ("RefreshExporter", "model")
  assert set(tasks["Pusher"]["inputs"]["artifacts"]) == {"model"}  # no blessing, no training
  executors = spec["deploymentSpec"]["executors"]
  assert executors["Pusher_executor"]["container"]["args"][1] == PUSHER_EXECUTOR
  assert "--runner=DataflowRunner" in executors["RefreshedGraphBuilder_executor"][
      "container"]["args"]
  destination = json.loads(_parameter(tasks["Pusher"], "push_destination"))
  assert destination["filesystem"]["base_directory"] == "gs://bucket/root/serving/e2e_grec"


def test_submit_sends_the_yaml_spec_with_parameters_and_root(specs, monkeypatch):
  calls = []

  class FakeClient:
    def __init__(self, host):
      calls.append(("host", host))

    def create_run_from_pipeline_package(self, pipeline_file, **kwargs):
      kfp_client._extract_pipeline_yaml(pipeline_file)  # pylint: disable=protected-access
      calls.append(("run", pipeline_file, kwargs))
      return type("Result", (), {"run_id": "run-1"})()

  monkeypatch.setattr(kfp.client, "Client", FakeClient)
  paths = specs[0]
  assert cli.main(["submit-kubeflow", "--spec", paths["kfp"], "--host", "http://kfp:8888",
                   "--param", "data_dir=gs://b/other", "--param",
                   "pipeline_root=gs://b/run-root"]) == 0
  assert calls == [("host", "http://kfp:8888"),
                   ("run", paths["kfp"], {"arguments": {"data_dir": "gs://b/other"},
                                          "pipeline_root": "gs://b/run-root",
                                          "experiment_name": None})]
  with pytest.raises(ValueError, match="PipelineSpec YAML"):
    kubeflow.submit(paths["vertex"], "http://kfp:8888", {})


def test_kserve_serves_what_the_pusher_writes_with_a_recent_runtime():
  with open(os.path.join(REPO, "kubeflow", "kserve.yaml")) as f:
    service = yaml.safe_load(f)
  config = config_lib.Config()
  model = service["spec"]["predictor"]["model"]
  pushed = f"{kubeflow.locations(config).serving_dir}/{config.serving.model_name}"
  assert model["storageUri"] == pushed
  assert tuple(map(int, model["runtimeVersion"].split("."))) >= (2, 21)
  assert model["resources"]["requests"] and model["resources"]["limits"]
  assert model["readinessProbe"] and model["livenessProbe"]
