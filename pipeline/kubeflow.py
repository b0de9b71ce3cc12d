"""`e2e-grec compile-kubeflow`: the same DAG as a Kubeflow Pipelines v2 spec.

Every component runs in `pipeline.kubeflow_image` (kubeflow/Dockerfile), whose
package directory is `IMAGE_PACKAGE_DIR`; artifacts live under
`pipeline.kubeflow_root` (remote storage such as gs://) and models are pushed
to `<kubeflow_root>/serving/<serving.model_name>`. Beam components run with
`pipeline.beam_args`: the DirectRunner inside the pod by default, Dataflow or
Flink when those args say so (kubeflow/README.md).
"""
from __future__ import annotations

import argparse
import os

from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner

from e2e_grec import contracts
from e2e_grec.config import Config
from e2e_grec.pipeline import pipeline as pipeline_lib

# Where kubeflow/Dockerfile installs the package inside the image.
IMAGE_PACKAGE_DIR = "/e2e_grec"
DEFAULT_OUT = os.path.join("kubeflow", "e2e_grec_pipeline.json")


def locations(config: Config) -> pipeline_lib.Locations:
  root = config.pipeline.kubeflow_root.rstrip("/")
  return pipeline_lib.locations(
      config, root=root, serving_dir=f"{root}/serving",
      schema_file=os.path.join(IMAGE_PACKAGE_DIR, contracts.EXAMPLES_SCHEMA_RELPATH),
      metadata_path=None)


def compile_pipeline(config: Config, out: str = DEFAULT_OUT) -> str:
  """Writes the KFP v2 pipeline spec JSON to `out`; returns its path."""
  runner = kubeflow_v2_dag_runner.KubeflowV2DagRunner(
      config=kubeflow_v2_dag_runner.KubeflowV2DagRunnerConfig(
          default_image=config.pipeline.kubeflow_image),
      output_dir=os.path.dirname(os.path.abspath(out)),
      output_filename=os.path.basename(out))
  runner.run(pipeline_lib.create_pipeline(config, locations(config)))
  return out


def command(args: argparse.Namespace, config: Config) -> int:
  """`e2e-grec compile-kubeflow [--out FILE]`."""
  out = compile_pipeline(config, args.out)
  where = locations(config)
  print(f"wrote the Kubeflow Pipelines v2 spec {out}\n"
        f"  image          {config.pipeline.kubeflow_image}\n"
        f"  pipeline root  {where.root}\n"
        f"  data           {'synthetic, generated under the root' if where.synthetic else where.data_dir}\n"
        f"  beam args      {' '.join(config.pipeline.beam_args)}\n"
        f"  pushes to      {where.serving_dir}/{config.serving.model_name}\n"
        "Submit it with the KFP client or the Vertex AI console (kubeflow/README.md).")
  return 0
