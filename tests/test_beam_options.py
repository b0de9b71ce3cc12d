"""Beam options for a Flink, Spark or portable runner reach the graph builder's pipeline.

No cluster is reachable here: `beam_pipeline` is wrapped to record the
pipeline the builder asked for (its runner and its `PipelineOptions` views)
and to stop the build there, before anything would be submitted. That a
build with the options runs is test_graph_builder's and test_cli's part.
"""
import e2e_grec  # noqa: F401  (legacy Keras before TensorFlow)
import pytest
from apache_beam.options.pipeline_options import (FlinkRunnerOptions, PortableOptions,
                                                  SparkRunnerOptions, StandardOptions)

from e2e_grec import cli
from e2e_grec.graph import builder
from test_graph_builder import write_toy_prepared

FLINK = ["--runner=FlinkRunner", "--flink_master=flink-jobmanager:8081", "--parallelism=4",
         "--environment_type=EXTERNAL", "--environment_config=localhost:50000"]
SPARK = ["--runner=SparkRunner", "--spark_master_url=spark://spark-master:7077",
         "--environment_type=LOOPBACK"]
PORTABLE = ["--runner=PortableRunner", "--job_endpoint=beam-job-server:8099",
            "--artifact_endpoint=beam-job-server:8098", "--environment_type=DOCKER",
            "--environment_config=apache/beam_python3.11_sdk:2.77.0"]


class NoCluster(Exception):
  """Stops the build where it would submit to the cluster."""


@pytest.fixture
def requested(monkeypatch):
  """The pipelines `e2e-grec build-graph` asked for; the build stops there."""
  pipelines = []
  real = builder.beam_pipeline

  def record_and_stop(beam_args):
    pipelines.append(real(beam_args))
    raise NoCluster("no cluster in this test")

  monkeypatch.setattr(builder, "beam_pipeline", record_and_stop)
  return pipelines


def build_graph(tmp_path, capsys, *args) -> None:
  """`e2e-grec build-graph` on the toy examples with `args`; it stops at the pipeline."""
  examples = write_toy_prepared(str(tmp_path))
  assert cli.main(["build-graph", "--examples", examples, "--out", str(tmp_path / "graph"),
                   *args]) != 0
  assert "no cluster in this test" in capsys.readouterr().err


@pytest.fixture(autouse=True)
def log_dir(tmp_path, monkeypatch):
  monkeypatch.setenv(cli.LOG_DIR_ENV, str(tmp_path / "logs"))


@pytest.mark.parametrize("beam_args, runner, view, expected", [
    (FLINK, "FlinkRunner", FlinkRunnerOptions,
     {"flink_master": "flink-jobmanager:8081", "parallelism": 4}),
    (SPARK, "SparkRunner", SparkRunnerOptions,
     {"spark_master_url": "spark://spark-master:7077"}),
    (PORTABLE, "PortableRunner", PortableOptions,
     {"job_endpoint": "beam-job-server:8099", "artifact_endpoint": "beam-job-server:8098",
      "environment_type": "DOCKER",
      "environment_config": "apache/beam_python3.11_sdk:2.77.0"}),
], ids=["flink", "spark", "portable"])
def test_options_after_double_dash_reach_the_pipeline(tmp_path, capsys, requested, beam_args,
                                                       runner, view, expected):
  build_graph(tmp_path, capsys, "--", *beam_args)
  (pipeline,) = requested
  options = pipeline.options
  # The config's default --runner=DirectRunner comes first; the command line wins.
  assert options.view_as(StandardOptions).runner == runner
  assert type(pipeline.runner).__name__ == runner  # not pinned to the local runner
  assert {k: getattr(options.view_as(view), k) for k in expected} == expected


def test_options_from_the_config_reach_the_pipeline(tmp_path, capsys, requested):
  build_graph(tmp_path, capsys, "--set", f"graph.beam_args={FLINK}")
  (pipeline,) = requested
  assert pipeline.options.view_as(StandardOptions).runner == "FlinkRunner"
  assert pipeline.options.view_as(FlinkRunnerOptions).flink_master == "flink-jobmanager:8081"
