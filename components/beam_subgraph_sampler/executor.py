"""BeamSubgraphSampler executor: per-example subgraphs, or TF-GNN's Beam sampler per node.

With `seed_node_set=example` (`PER_EXAMPLE`, what `sampling.where=beam`
trains on) it samples every example of every split with its day as cutoff,
exactly as the in-trainer sampler would (graph/beam_sampling.py): leak-free
for training examples too.

With `seed_node_set=user|video` it is the distributed path for graphs that do
not fit in memory: the subgraph of every seed is sampled by a Beam pipeline reading the unigraph
files (`tensorflow_gnn.experimental.sampler.beam`, the library behind its
`sampler` main, called here without its absl flags) and written as
serialized GraphTensors. The sampling spec is the `SamplingPlan` of
graph/sampling_plan.py -- the plan the in-memory `SubgraphSampler` runs --
seeded at one node set and sampled uniformly.

Leakage: TF-GNN's Beam sampler has no per-example day cutoff. It samples the
graph as built -- the training window plus the pre-period history -- so its
subgraphs are leak-free only for seeds whose examples come after the training
window (the eval split, the default). Training examples must use the
in-memory sampler, which filters edges by day.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Sequence

import e2e_grec  # noqa: F401  (legacy Keras before TensorFlow)
import apache_beam as beam
import numpy as np
import tensorflow as tf
import tensorflow_gnn as tfgnn
from tensorflow_gnn.data import unigraph
from tensorflow_gnn.experimental import sampler as experimental_sampler
from tensorflow_gnn.experimental.sampler.beam import executor_lib
from tensorflow_gnn.experimental.sampler.beam import sampler as beam_sampler
from tensorflow_gnn.experimental.sampler.beam import unigraph_utils
from tfx import types
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact_utils, standard_component_specs

from e2e_grec import contracts
from e2e_grec.config import SamplingConfig
from e2e_grec.datasets import node_tables as node_tables_lib
from e2e_grec.datasets import vocab
from e2e_grec.graph import beam_sampling, builder
from e2e_grec.graph.sampling_plan import SamplingPlan, schema_endpoints

_ID_COLUMNS = {"user": contracts.USER_ID, "video": contracts.VIDEO_ID}
# The seed node set value that samples each example (its user and video, cut off at its day).
PER_EXAMPLE = "example"


def sampling_spec(schema: tfgnn.GraphSchema, seed_node_set: str,
                  config: SamplingConfig) -> tfgnn.sampler.SamplingSpec:
  """The TF-GNN SamplingSpec of the `config` plan from `seed_node_set`."""
  plan = SamplingPlan.build(schema_endpoints(schema), config, (seed_node_set,))
  return plan.sampling_spec(schema)


def _sampled_schema(schema: tfgnn.GraphSchema, spec: tfgnn.sampler.SamplingSpec
                    ) -> tfgnn.GraphSchema:
  """The graph schema restricted to the edge sets the spec samples (less to read)."""
  sampled = {op.edge_set_name for op in spec.sampling_ops}
  reduced = tfgnn.GraphSchema()
  reduced.CopyFrom(schema)
  for name in [n for n in reduced.edge_sets if n not in sampled]:
    del reduced.edge_sets[name]
  return reduced


def seed_indices(examples_dir: str, split: str, node_set: str) -> np.ndarray:
  """Distinct node indices of the split's users (or videos); unseen ids give 0 (OOV)."""
  pattern = contracts.split_glob(examples_dir, split)
  files = sorted(tf.io.gfile.glob(pattern))
  if not files:
    raise ValueError(f"no examples match {pattern}")
  column = _ID_COLUMNS[node_set]
  spec = {column: tf.io.FixedLenFeature([], tf.int64)}
  dataset = (tf.data.TFRecordDataset(files, compression_type="GZIP").batch(65_536)
             .map(lambda s: tf.io.parse_example(s, spec)[column]))
  raw = np.unique(np.concatenate([np.zeros([0], np.int64)]
                                 + list(dataset.as_numpy_iterator())))
  if not raw.size:
    raise ValueError(f"{pattern} holds no examples")
  arrays = node_tables_lib.load_arrays(os.path.join(examples_dir, contracts.NODE_TABLES_FILE))
  return np.unique(vocab.index(arrays, node_set, raw))


def materialize_subgraphs(graph_dir: str, seeds: np.ndarray, seed_node_set: str,
                          config: SamplingConfig, out_dir: str,
                          beam_args: Sequence[str] = ()) -> tfgnn.GraphSchema:
  """Samples one subgraph per seed node index with TF-GNN's Beam sampler.

  Writes the `Subgraphs` layout (components/artifacts.py) into `out_dir` and
  returns the subgraphs' schema.
  """
  schema = unigraph.read_schema(os.path.join(graph_dir, contracts.GRAPH_SCHEMA_FILE))
  spec = sampling_spec(schema, seed_node_set, config)
  schema = _sampled_schema(schema, spec)
  tf.io.gfile.makedirs(out_dir)
  with tf.io.gfile.GFile(os.path.join(out_dir, contracts.SAMPLING_SPEC_FILE), "w") as f:
    f.write(str(spec))
  seeds_path = os.path.join(out_dir, contracts.SEEDS_FILE)
  with tf.io.TFRecordWriter(seeds_path) as writer:
    for record in builder.serialize_table({unigraph.NODE_ID: np.asarray(seeds, np.int64)}):
      writer.write(record)

  model, layers_mapping = beam_sampler.get_sampling_model(schema, spec)
  program, artifacts = experimental_sampler.create_program(model)
  artifacts_path = os.path.join(out_dir, contracts.SAMPLING_ARTIFACTS_DIR)
  beam_sampler.save_artifacts(artifacts, artifacts_path)
  # The model samples a batch of seeds; each record holds one (unbatched) subgraph.
  subgraph_schema = tfgnn.create_schema_pb_from_graph_spec(model.output.spec._unbatch())  # pylint: disable=protected-access
  tfgnn.write_schema(subgraph_schema, os.path.join(out_dir, contracts.GRAPH_SCHEMA_FILE))

  logging.info("Beam sampler: %d %s seeds, %d sampling ops, Beam args %s", len(seeds),
               seed_node_set, len(spec.sampling_ops), list(beam_args))
  with builder.beam_pipeline(beam_args) as root:
    feeds = dict(root | "ReadGraph" >> unigraph_utils.ReadAndConvertUnigraph(
        schema, graph_dir))
    feeds.update({layer: feeds[edge_set] for layer, edge_set in layers_mapping.items()})
    inputs = {"Input": unigraph_utils.read_seeds(root, seeds_path)}
    subgraphs = executor_lib.execute(program, inputs, feeds=feeds,
                                     artifacts_path=artifacts_path)
    _ = (subgraphs
         | "DropSeedKeys" >> beam.Values()
         | "WriteSubgraphs" >> unigraph.WriteTable(os.path.join(out_dir, contracts.SUBGRAPHS_FILE)))
  return subgraph_schema


class Executor(base_beam_executor.BaseBeamExecutor):
  """Materialises the subgraphs of a split's seeds with the pipeline's Beam options."""

  def Do(self, input_dict: dict[str, list[types.Artifact]],
         output_dict: dict[str, list[types.Artifact]],
         exec_properties: dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    graph = artifact_utils.get_single_instance(input_dict[contracts.GRAPH_KEY])
    examples = artifact_utils.get_single_instance(
        input_dict[standard_component_specs.EXAMPLES_KEY])
    subgraphs = artifact_utils.get_single_instance(output_dict[contracts.SUBGRAPHS_KEY])
    config = contracts.decode_config(exec_properties[contracts.CONFIG_KEY])
    split = exec_properties.get(contracts.SPLIT_KEY) or contracts.EVAL_SPLIT
    seed_node_set = exec_properties.get(contracts.SEED_NODE_SET_KEY) or "user"
    if seed_node_set == PER_EXAMPLE:
      counts = beam_sampling.sample_subgraphs(config, examples.uri, graph.uri, subgraphs.uri,
                                              beam_args=self._beam_pipeline_args)
      for name, count in counts.items():
        subgraphs.set_int_custom_property(f"num_examples_{name}", count)
      subgraphs.set_string_custom_property("seed_node_set", PER_EXAMPLE)
      return
    seeds = seed_indices(examples.uri, split, seed_node_set)
    beam_args = tuple(config.graph.beam_args) + tuple(self._beam_pipeline_args)
    materialize_subgraphs(graph.uri, seeds, seed_node_set, config.sampling, subgraphs.uri,
                          beam_args)
    subgraphs.set_int_custom_property("num_seeds", len(seeds))
    subgraphs.set_string_custom_property("split", split)
    subgraphs.set_string_custom_property("seed_node_set", seed_node_set)
