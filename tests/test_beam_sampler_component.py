"""The TFX components: GraphBuilder, and BeamSubgraphSampler running TF-GNN's Beam sampler."""
import os

import e2e_grec  # noqa: F401  (legacy Keras before TensorFlow)
import numpy as np
import tensorflow as tf
import tensorflow_gnn as tfgnn
from tfx import types
from tfx.types import standard_artifacts

from e2e_grec import contracts
from e2e_grec.components import artifacts
from e2e_grec.components.beam_subgraph_sampler import BeamSubgraphSampler
from e2e_grec.components.beam_subgraph_sampler import executor as sampler_executor
from e2e_grec.components.graph_builder import GraphBuilder
from e2e_grec.components.graph_builder import executor as graph_executor
from test_graph_builder import D1, read_edge_file, toy_config, write_toy_prepared

FANOUTS = (2, 2)
# Eval users: two known, one unseen (-> the OOV node 0).
EVAL_USERS = (10, 20, 55)


def _artifact(cls, uri):
  artifact = cls()
  artifact.uri = uri
  return artifact


def _write_eval_split(examples_dir):
  path = contracts.split_file(examples_dir, contracts.EVAL_SPLIT)
  os.makedirs(os.path.dirname(path))
  with tf.io.TFRecordWriter(path, options="GZIP") as writer:
    for user in EVAL_USERS:
      example = tf.train.Example()
      example.features.feature["user_id"].int64_list.value.append(user)
      example.features.feature["day"].int64_list.value.append(D1 + 1)
      writer.write(example.SerializeToString())


def test_components_declare_their_interfaces():
  config = toy_config()
  examples = types.Channel(type=standard_artifacts.Examples)
  builder_component = GraphBuilder(examples=examples, config=config)
  assert builder_component.outputs["graph"].type is artifacts.Graph
  assert contracts.decode_config(
      builder_component.exec_properties[contracts.CONFIG_KEY]) == config
  sampler_component = BeamSubgraphSampler(graph=builder_component.outputs["graph"],
                                          examples=examples, config=config)
  assert sampler_component.outputs["subgraphs"].type is artifacts.Subgraphs
  assert sampler_component.exec_properties["split"] == "eval"


def test_beam_sampler_component_materialises_subgraphs(tmp_path):
  examples_dir = write_toy_prepared(str(tmp_path))
  _write_eval_split(examples_dir)
  # Few sampling ops keep TF-GNN's Beam sampler quick (each op is a Keras model
  # that is traced, saved and loaded).
  config = toy_config().replace(**{"sampling.fanouts": list(FANOUTS),
                                   "model.gnn_layers": len(FANOUTS),
                                   "sampling.edge_sets": ["click"]})
  examples = _artifact(standard_artifacts.Examples, examples_dir)
  graph = _artifact(artifacts.Graph, str(tmp_path / "graph"))
  graph_executor.Executor().Do(
      {"examples": [examples]}, {"graph": [graph]},
      {contracts.CONFIG_KEY: contracts.encode_config(config)})
  assert graph.get_int_custom_property("num_edges") > 0

  subgraphs = _artifact(artifacts.Subgraphs, str(tmp_path / "subgraphs"))
  sampler_executor.Executor().Do(
      {"graph": [graph], "examples": [examples]}, {"subgraphs": [subgraphs]},
      {contracts.CONFIG_KEY: contracts.encode_config(config), "split": "eval",
       "seed_node_set": "user"})
  assert subgraphs.get_int_custom_property("num_seeds") == 3

  out = subgraphs.uri
  spec = tfgnn.create_graph_spec_from_schema_pb(
      tfgnn.read_schema(os.path.join(out, contracts.GRAPH_SCHEMA_FILE)))
  sampling_spec = sampler_executor.sampling_spec(
      tfgnn.read_schema(os.path.join(graph.uri, contracts.GRAPH_SCHEMA_FILE)), "user",
      config.sampling)
  ops_per_edge_set = {}
  for op in sampling_spec.sampling_ops:
    ops_per_edge_set[op.edge_set_name] = ops_per_edge_set.get(op.edge_set_name, 0) + 1
  graph_edges = {}
  seeds = set()
  for record in tf.data.TFRecordDataset(os.path.join(out, contracts.SUBGRAPHS_FILE)):
    subgraph = tfgnn.parse_single_example(spec, record)
    users = subgraph.node_sets["user"]["id"].numpy()
    seeds.add(int(users[0]))  # the seed is the first user node
    for name, edge_set in subgraph.edge_sets.items():
      source_set, target_set = edge_set.adjacency.source_name, edge_set.adjacency.target_name
      sources = subgraph.node_sets[source_set]["id"].numpy()[edge_set.adjacency.source]
      targets = subgraph.node_sets[target_set]["id"].numpy()[edge_set.adjacency.target]
      days = edge_set["day"].numpy()
      if name not in graph_edges:
        graph_edges[name] = {e[:3] for e in read_edge_file(graph.uri, name)}
      # Every sampled edge is an edge of the built graph, with its day.
      assert set(zip(sources.tolist(), targets.tolist(), days.tolist())) <= graph_edges[name]
      # Fan-out: at most FANOUT edges per source node and sampling op.
      if len(sources):
        assert np.bincount(edge_set.adjacency.source.numpy()).max() <= (
            max(FANOUTS) * ops_per_edge_set[name]), name
  assert seeds == {0, 1, 2}
  # Hop 1 follows click from the users, hop 2 rev_click from the videos.
  assert ops_per_edge_set == {"click": 1, "rev_click": 1}
  assert set(graph_edges) <= set(ops_per_edge_set)
