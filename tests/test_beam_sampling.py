"""Beam-sampled training (`sampling.where=beam`): the Beam transform draws the in-trainer
sampler's subgraphs, leak-free, and training on them matches the in-trainer path."""
import os

import e2e_grec  # noqa: F401  (legacy Keras before TensorFlow)
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_gnn as tfgnn

from e2e_grec import config as config_lib
from e2e_grec import contracts
from e2e_grec.config import ConfigError
from e2e_grec.datasets import examples as examples_lib
from e2e_grec.graph import beam_sampling, builder
from e2e_grec.graph.sampling_index import SamplingIndex
from e2e_grec.training import inputs as inputs_lib
import toy_data

HISTORY_DAY = 19090
# Two hops: the second expands only nodes the first newly reached.
FANOUTS = [3, 2]


def _config(**overrides):
  base = {"graph.shards": 3, "graph.co_engage_top_k": 2, "sampling.fanouts": FANOUTS,
          "model.gnn_layers": len(FANOUTS), "train.batch_size": 32, "train.epochs": 1,
          "train.log_every_steps": 1, "train.checkpoint_every_steps": 100}
  return config_lib.Config().replace(**{**base, **overrides})


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
  """Toy examples, a Beam-built graph of them and their Beam-sampled subgraphs."""
  root = str(tmp_path_factory.mktemp("beam_sampling"))
  examples_dir, _ = toy_data.write_toy_run_inputs(root)
  rng = np.random.default_rng(1)
  np.savez(os.path.join(examples_dir, contracts.HISTORY_FILE),
           user_id=100 + rng.integers(0, 12, 30), video_id=100 + rng.integers(0, 20, 30),
           day=np.full(30, HISTORY_DAY))
  graph_dir, subgraphs_dir = os.path.join(root, "beam_graph"), os.path.join(root, "subgraphs")
  config = _config()
  builder.build_graph(config, examples_dir, graph_dir)
  counts = beam_sampling.sample_subgraphs(config, examples_dir, graph_dir, subgraphs_dir)
  return examples_dir, graph_dir, subgraphs_dir, counts


def _subgraphs(subgraphs_dir, split):
  """(features, GraphTensor) of every pre-sampled example of a split, in file order."""
  spec = beam_sampling.graph_spec(subgraphs_dir)
  files = sorted(tf.io.gfile.glob(contracts.split_glob(subgraphs_dir, split)))
  for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
    yield examples_lib.parse(record), tfgnn.parse_single_example(spec, record)


def _id_edges(graph):
  """Sorted (edge set, source id, target id) of a subgraph, readout included."""
  edges = []
  for name, edge_set in graph.edge_sets.items():
    adjacency = edge_set.adjacency
    ids = lambda node_set, index: (
        graph.node_sets[node_set][contracts.NODE_ID_FEATURE].numpy()[index.numpy()]
        if node_set != contracts.READOUT else index.numpy())
    edges += [(name, int(s), int(t)) for s, t in zip(
        ids(adjacency.source_name, adjacency.source), ids(adjacency.target_name, adjacency.target))]
  return sorted(edges)


def test_every_example_is_written_once_with_its_features(toy):
  examples_dir, _, subgraphs_dir, counts = toy
  for split in contracts.SPLITS:
    original = examples_lib.read_examples(contracts.split_file(examples_dir, split))
    presampled = inputs_lib.PresampledSubgraphs(subgraphs_dir).columns(split)
    assert counts[split] == len(original["user_id"])
    key = lambda c: sorted(zip(c["user_id"].tolist(), c["video_id"].tolist(),
                               c["day"].tolist(), c["hour"].tolist()))
    assert key(presampled) == key(original)


@pytest.mark.parametrize("split", contracts.SPLITS)
def test_same_subgraph_as_the_in_trainer_sampler(toy, split):
  """Each example's Beam subgraph is the in-memory sampler's for a batch of that example."""
  examples_dir, graph_dir, subgraphs_dir, _ = toy
  config = _config()
  sampler = inputs_lib.make_sampler(config, graph_dir, inputs_lib.load_tables(examples_dir))
  seed = beam_sampling.split_seed(config, split)
  compared = 0
  for features, graph in _subgraphs(subgraphs_dir, split):
    expected = sampler(features["user_id"][None], features["video_id"][None],
                       features["day"][None], seed=seed)
    assert _id_edges(graph) == _id_edges(expected)
    compared += 1
  assert compared


def test_no_edge_of_the_example_day_or_later_nor_its_own_interaction(toy):
  examples_dir, graph_dir, subgraphs_dir, _ = toy
  index = SamplingIndex.load(graph_dir)

  def first_day(name, source, target):
    es = index.edge_sets[name]
    row = slice(es.row_splits[source], es.row_splits[source + 1])
    days = es.days[row][es.targets[row] == target]
    return int(days.min()) if days.size else None

  own_seen = 0
  for split in contracts.SPLITS:
    for features, graph in _subgraphs(subgraphs_dir, split):
      day = int(features["day"])
      user, video = (int(graph.node_sets[ns][contracts.NODE_ID_FEATURE][graph.edge_sets[
          contracts.readout_edge_set(ns)].adjacency.source[0]]) for ns in ("user", "video"))
      for name, source, target in _id_edges(graph):
        if name.startswith("_"):
          continue
        earliest = first_day(name, source, target)
        assert earliest is not None and earliest < day, (name, source, target, day)
        if {source, target} == {user, video} and "video" in index.edge_sets[name].target_set:
          own_seen += 1
          # Sampled only through an earlier interaction of the same pair.
          assert first_day(name, source, target) < day
  assert own_seen >= 0


def test_training_on_beam_subgraphs_matches_the_in_trainer_path(toy, tmp_path):
  from e2e_grec.training import run
  examples_dir, graph_dir, subgraphs_dir, _ = toy
  one_hop = {"sampling.fanouts": [3], "model.gnn_layers": 1}
  config = _config(**one_hop)
  beam_dir = str(tmp_path / "subgraphs_one_hop")
  beam_sampling.sample_subgraphs(config, examples_dir, graph_dir, beam_dir)
  trainer_metrics = run.run(config, examples_dir, graph_dir, str(tmp_path / "trainer")).metrics
  beam_config = config.replace(**{"sampling.where": "beam", "sampling.subgraphs_dir": beam_dir})
  beam_metrics = run.run(beam_config, examples_dir, graph_dir, str(tmp_path / "beam")).metrics
  assert beam_metrics["examples"] == trainer_metrics["examples"] == 64
  for key in ("mean_auc", "mean_gauc"):
    assert abs(beam_metrics[key] - trainer_metrics[key]) < 0.1, (key, beam_metrics[key],
                                                                  trainer_metrics[key])


def test_where_is_a_checked_choice_and_beam_needs_the_subgraphs(toy):
  examples_dir, graph_dir, _, _ = toy
  with pytest.raises(ConfigError, match="sampling.where"):
    config_lib.load(overrides=["sampling.where=cluster"])
  with pytest.raises(ValueError, match="sampling.subgraphs_dir"):
    inputs_lib.Inputs.from_dirs(_config(**{"sampling.where": "beam"}), examples_dir, graph_dir)
