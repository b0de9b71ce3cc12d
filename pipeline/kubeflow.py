"""`e2e-grec compile-kubeflow` and `submit-kubeflow`: the same DAG for Kubeflow.

Two targets, compiled by TFX's `KubeflowV2DagRunner` (KFP pipeline spec 2.1):

- `kfp`: open-source Kubeflow Pipelines 2.x. A PipelineSpec YAML, the format
  `kfp.Client.create_run_from_pipeline_package` uploads. KFP has no TFX resolver
  nodes, so the LatestBlessedModelResolver is left out (pipeline.py).
- `vertex`: Vertex AI Pipelines. TFX's PipelineJob JSON, with the resolver.

Two pipelines: `training` (pipeline.py) and `graph_refresh`
(graph_refresh.py: no training; the trained run directory is the run-time
parameter `model_run`).

Every component runs in `pipeline.kubeflow_image` (kubeflow/Dockerfile), whose
package directory is `IMAGE_PACKAGE_DIR`, with the CPU, memory and GPUs of the
`resources` config section. The data directory is a run-time parameter
(`data_dir`, default `data.data_dir`), and so is the pipeline root (a run
argument of both backends; default `pipeline.kubeflow_root`). Models are pushed
to `<kubeflow_root>/serving/<serving.model_name>`. Beam components run with
`pipeline.beam_args`: the DirectRunner inside the pod by default, Dataflow or
Flink when those args say so (kubeflow/README.md).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from typing import Any

import yaml
from kfp.pipeline_spec import pipeline_spec_pb2
from tfx.dsl.components.common import importer, resolver
from tfx.orchestration import data_types
from tfx.orchestration import pipeline as tfx_pipeline
from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner

from e2e_grec import contracts
from e2e_grec.config import Config, ResourcesConfig
from e2e_grec.pipeline import graph_refresh
from e2e_grec.pipeline import pipeline as pipeline_lib

# Where kubeflow/Dockerfile installs the package inside the image.
IMAGE_PACKAGE_DIR = "/e2e_grec"
# target -> (whether the orchestrator implements TFX resolvers, spec file suffix).
TARGETS = {"kfp": (False, "yaml"), "vertex": (True, "json")}
# pipeline -> the stem of its default spec file name.
PIPELINES = {"training": "e2e_grec_pipeline", "graph_refresh": "e2e_grec_graph_refresh"}
DATA_DIR_PARAMETER = "data_dir"
# Components whose `data_dir` exec property is the run-time data directory.
DATA_READERS = ("ExampleGen", "GraphBuilder", "RefreshedGraphBuilder")
ResourceSpec = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec


def default_out(target: str, pipeline: str = "training") -> str:
  return os.path.join("kubeflow", f"{PIPELINES[pipeline]}_{target}.{TARGETS[target][1]}")


def locations(config: Config) -> pipeline_lib.Locations:
  root = config.pipeline.kubeflow_root.rstrip("/")
  return pipeline_lib.locations(
      config, root=root, serving_dir=f"{root}/serving",
      schema_file=os.path.join(IMAGE_PACKAGE_DIR, contracts.EXAMPLES_SCHEMA_RELPATH),
      metadata_path=None)


def resource_spec(resources: ResourcesConfig, component_id: str, target: str) -> ResourceSpec:
  """The pod resources of one component: request = limit, both field generations.

  KFP 2.x reads the `resource_*` strings, Vertex AI the numeric limits and the
  accelerator type.
  """
  cpu = resources.cpu.get(component_id, resources.cpu["default"])
  memory = resources.memory_gib.get(component_id, resources.memory_gib["default"])
  spec = ResourceSpec(cpu_limit=cpu, memory_limit=memory,
                      resource_cpu_request=f"{cpu:g}", resource_cpu_limit=f"{cpu:g}",
                      resource_memory_request=f"{memory:g}Gi",
                      resource_memory_limit=f"{memory:g}Gi")
  gpus = resources.gpus.get(component_id, 0)
  if gpus:
    spec.accelerator.count = gpus
    spec.accelerator.resource_count = str(gpus)
    spec.accelerator.resource_type = resources.kfp_gpu_resource
    if target == "vertex":
      spec.accelerator.type = resources.vertex_gpu_type
  return spec


def create_pipeline(config: Config, target: str,
                    pipeline: str = "training") -> tfx_pipeline.Pipeline:
  """`pipeline` for `target`, with its run-time parameters and pod resources."""
  if target not in TARGETS:
    raise ValueError(f"unknown Kubeflow target {target!r}; one of {', '.join(TARGETS)}")
  if pipeline not in PIPELINES:
    raise ValueError(f"unknown pipeline {pipeline!r}; one of {', '.join(PIPELINES)}")
  where = locations(config)
  if pipeline == "graph_refresh":
    pipeline = graph_refresh.create_pipeline(config, where, data_types.RuntimeParameter(
        name=graph_refresh.MODEL_RUN_PARAMETER, ptype=str,
        description="The trained run directory to refresh: a Trainer's ModelRun URI "
        "(config.yaml, weights/, node_tables.npz)"))
  else:
    pipeline = pipeline_lib.create_pipeline(config, where,
                                            resolve_last_blessed=TARGETS[target][0])
  data_dir = data_types.RuntimeParameter(
      name=DATA_DIR_PARAMETER, ptype=str, default=where.data_dir,
      description="KuaiRand-layout data directory the pods can read (for a spec compiled "
      "without data.data_dir: where the synthetic logs are generated)")
  for component in pipeline.components:
    if component.id in DATA_READERS:
      # Set after construction: the components take a path, and compute a local
      # fingerprint from it that is empty for remote data anyway.
      component.exec_properties[DATA_DIR_PARAMETER] = data_dir
    if not isinstance(component, (resolver.Resolver, importer.Importer)):
      component.with_platform_config(resource_spec(config.resources, component.id, target))
  return pipeline


def compile_pipeline(config: Config, target: str = "kfp", out: str | None = None,
                     pipeline: str = "training") -> str:
  """Writes the spec of `pipeline` for `target` to `out` (default `default_out`);
  returns the path."""
  out = out or default_out(target, pipeline)
  pipeline = create_pipeline(config, target, pipeline)
  defaults = {DATA_DIR_PARAMETER: locations(config).data_dir}
  with tempfile.TemporaryDirectory() as scratch:
    job = kubeflow_v2_dag_runner.KubeflowV2DagRunner(
        config=kubeflow_v2_dag_runner.KubeflowV2DagRunnerConfig(
            default_image=config.pipeline.kubeflow_image, use_pipeline_spec_2_1=True),
        output_dir=scratch).run(pipeline, parameter_values=defaults, write_out=False)
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "w") as f:
    if target == "kfp":
      yaml.safe_dump(kfp_pipeline_spec(job), f, sort_keys=True)
    else:
      json.dump(job, f, indent=2, sort_keys=True)
      f.write("\n")
  return out


def kfp_pipeline_spec(job: dict[str, Any]) -> dict[str, Any]:
  """The PipelineSpec inside TFX's PipelineJob, standing alone as KFP 2.x expects it.

  The job's run-time config moves into the spec: the output directory becomes
  `defaultPipelineRoot` and each parameter value its input's default.
  """
  spec = dict(job["pipelineSpec"])
  spec["defaultPipelineRoot"] = job["runtimeConfig"]["gcsOutputDirectory"]
  inputs = spec["root"].get("inputDefinitions", {}).get("parameters", {})
  for name, value in job["runtimeConfig"].get("parameterValues", {}).items():
    inputs[name].update(defaultValue=value, isOptional=True)
  return spec


def submit(spec_file: str, host: str, arguments: dict[str, str],
           experiment: str | None = None) -> str:
  """Starts a run of a compiled `kfp` spec on the KFP 2.x API at `host`; returns its id.

  A `pipeline_root` argument is the run's pipeline root; the others are the
  spec's run-time parameters.
  """
  from kfp import client  # pylint: disable=g-import-not-at-top  (only for submitting)

  if not spec_file.endswith((".yaml", ".yml")):
    raise ValueError(f"{spec_file}: KFP runs a PipelineSpec YAML; compile one with "
                     "`e2e-grec compile-kubeflow --target kfp` (the Vertex AI JSON is "
                     "submitted with google-cloud-aiplatform, kubeflow/README.md)")
  arguments = dict(arguments)
  root = arguments.pop("pipeline_root", None)
  result = client.Client(host=host).create_run_from_pipeline_package(
      spec_file, arguments=arguments, pipeline_root=root, experiment_name=experiment)
  return result.run_id


def command(args: argparse.Namespace, config: Config) -> int:
  """`e2e-grec compile-kubeflow [--target kfp|vertex] [--pipeline training|graph_refresh]
  [--image I] [--root R] [--out FILE]`."""
  out = compile_pipeline(config, args.target, args.out, args.pipeline)
  where = locations(config)
  model_run = (f"  trained run    run-time parameter {graph_refresh.MODEL_RUN_PARAMETER} "
               "(required)\n" if args.pipeline == "graph_refresh" else "")
  print(f"wrote the {args.target} {args.pipeline} pipeline spec {out}\n"
        f"{model_run}"
        f"  image          {config.pipeline.kubeflow_image}\n"
        f"  pipeline root  {where.root} (run argument pipeline_root)\n"
        f"  data           "
        f"{'synthetic, generated under the root' if where.synthetic else where.data_dir} "
        f"(run-time parameter {DATA_DIR_PARAMETER})\n"
        f"  beam args      {' '.join(config.pipeline.beam_args)}\n"
        f"  pushes to      {where.serving_dir}/{config.serving.model_name}\n"
        "Submit it with `e2e-grec submit-kubeflow` (kfp) or the Vertex AI SDK "
        "(kubeflow/README.md).")
  return 0


def submit_command(args: argparse.Namespace, config: Config) -> int:
  """`e2e-grec submit-kubeflow --spec FILE --host URL [--param NAME=VALUE ...]`."""
  del config  # the spec carries it
  arguments = {}
  for item in args.param:
    name, sep, value = item.partition("=")
    if not sep or not name:
      raise ValueError(f"--param {item!r}: expected NAME=VALUE")
    arguments[name] = value
  run_id = submit(args.spec, args.host, arguments, args.experiment)
  print(f"submitted {args.spec} to {args.host}: run {run_id}")
  return 0
