"""Beam-sampled training (`sampling.where=beam`): the Beam transform draws the in-trainer
sampler's subgraphs, leak-free, and training on them matches the in-trainer path."""
import os

import e2e_grec  # noqa: F401  (legacy Keras before TensorFlow)
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_gnn as tfgnn

from tfx.types import standard_artifacts

from e2e_grec import config as config_lib
from e2e_grec import contracts
from e2e_grec.components import artifacts
from e2e_grec.components.beam_subgraph_sampler import PER_EXAMPLE, BeamSubgraphSampler
from e2e_grec.components.beam_subgraph_sampler import executor as sampler_executor
from e2e_grec.config import ConfigError
from e2e_grec.datasets import examples as examples_lib
from e2e_grec.graph import beam_sampling, builder, example_subgraphs
from e2e_grec.graph.sampling_index import SamplingIndex
from e2e_grec.pipeline import pipeline as pipeline_lib
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
  subgraphs = artifacts.Subgraphs()
  subgraphs.uri = subgraphs_dir
  examples, graph = standard_artifacts.Examples(), artifacts.Graph()
  examples.uri, graph.uri = examples_dir, graph_dir
  sampler_executor.Executor().Do(
      {"graph": [graph], "examples": [examples]}, {"subgraphs": [subgraphs]},
      {contracts.CONFIG_KEY: contracts.encode_config(config),
       contracts.SEED_NODE_SET_KEY: PER_EXAMPLE})
  counts = {split: subgraphs.get_int_custom_property(f"num_examples_{split}")
            for split in contracts.SPLITS}
  return examples_dir, graph_dir, subgraphs_dir, counts


def _per_example_edges(graph):
  """[(edge set, source id, target id, tab), sorted] per component of a merged GraphTensor."""
  ids = {name: node_set[contracts.NODE_ID_FEATURE].numpy()
         for name, node_set in graph.node_sets.items() if name != contracts.READOUT}
  edges = [[] for _ in range(int(graph.num_components))]
  for name, edge_set in graph.edge_sets.items():
    adjacency = edge_set.adjacency
    component = np.repeat(np.arange(len(edges)), edge_set.sizes.numpy())
    source = ids[adjacency.source_name][adjacency.source.numpy()]
    target = adjacency.target.numpy()
    if adjacency.target_name != contracts.READOUT:
      target = ids[adjacency.target_name][target]
    else:  # the example's own readout node
      target = target - np.cumsum(graph.node_sets[contracts.READOUT].sizes.numpy())[component] + 1
    tab = (edge_set[contracts.EDGE_TAB_FEATURE].numpy()
           if contracts.EDGE_TAB_FEATURE in edge_set.features else np.full(len(source), -1))
    for c, s, t, tab_of in zip(component, source, target, tab):
      edges[c].append((name, int(s), int(t), int(tab_of)))
  return [sorted(e) for e in edges]


@pytest.fixture(scope="module")
def sampled(toy):
  """Per split: the pre-sampled examples' features, their edges, and the in-memory
  sampler's edges for each example alone (a batch of one, the split's seed)."""
  examples_dir, graph_dir, subgraphs_dir, _ = toy
  config = _config()
  sampler = inputs_lib.make_sampler(config, graph_dir, inputs_lib.load_tables(examples_dir))
  spec = example_subgraphs.read_spec(subgraphs_dir)
  ids = tf.TensorSpec([None], tf.int64)
  out = {}
  for split in contracts.SPLITS:
    files = sorted(tf.io.gfile.glob(contracts.split_glob(subgraphs_dir, split)))
    records = tf.constant(list(tf.data.TFRecordDataset(files, compression_type="GZIP")
                               .as_numpy_iterator()))
    features = {k: v.numpy() for k, v in examples_lib.parse(records).items()}
    beam = _per_example_edges(tfgnn.parse_example(spec, records).merge_batch_to_components())
    seed = beam_sampling.split_seed(config, split)
    sample = tf.function(lambda user, video, day: sampler(user, video, day, seed=seed),
                         input_signature=[ids, ids, ids])
    expected = [_per_example_edges(sample(*(features[k][i:i + 1] for k in (
        "user_id", "video_id", "day"))))[0] for i in range(len(records))]
    out[split] = features, beam, expected
  return out


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
def test_same_subgraph_as_the_in_trainer_sampler(sampled, split):
  """Each example's Beam subgraph is the in-memory sampler's for a batch of that example."""
  _, beam, expected = sampled[split]
  assert beam == expected
  assert sum(len(e) for e in beam) > 4 * len(beam)  # not trivially empty


def test_no_edge_of_the_example_day_or_later_nor_its_own_interaction(toy, sampled):
  _, graph_dir, _, _ = toy
  index = SamplingIndex.load(graph_dir)

  def earliest_day(name, source, target):
    es = index.edge_sets[name]
    row = slice(es.row_splits[source], es.row_splits[source + 1])
    days = es.days[row][es.targets[row] == target]
    return int(days.min()) if days.size else None

  for split in contracts.SPLITS:
    features, beam, _ = sampled[split]
    for i, edges in enumerate(beam):
      day = int(features["day"][i])
      for name, source, target, _ in edges:
        if not name.startswith("_"):
          # Some edge (source, target) of the graph is older than the example; the
          # example's own interaction (its day) is only there through an older one.
          earliest = earliest_day(name, source, target)
          assert earliest is not None and earliest < day, (split, i, name, source, target)


@pytest.fixture(scope="module")
def beam_run(toy, tmp_path_factory):
  """A one-hop model trained with where=beam, the graph's sampling index unloadable.

  One hop: each seed's state then depends on its sampled neighbours only, which
  both paths draw alike, so the eval metrics agree up to float rounding.
  """
  from e2e_grec.training import run
  examples_dir, graph_dir, _, _ = toy
  root = tmp_path_factory.mktemp("beam_run")
  config = _config(**{"sampling.fanouts": [3], "model.gnn_layers": 1})
  subgraphs_dir = str(root / "subgraphs")
  beam_sampling.sample_subgraphs(config, examples_dir, graph_dir, subgraphs_dir)
  beam = config.replace(**{"sampling.where": "beam", "sampling.subgraphs_dir": subgraphs_dir})

  def unloadable(*args, **kwargs):
    raise AssertionError("where=beam training loaded the graph's sampling index")

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(SamplingIndex, "load", unloadable)
    result = run.run(beam, examples_dir, None, str(root / "run"))  # No graph directory.
  return config, beam, result


def test_training_on_beam_subgraphs_and_its_eval_match_the_in_trainer_path(toy, beam_run):
  """A model trained with where=beam, without the graph, scores the same on the
  in-trainer eval path."""
  from e2e_grec.training import loop
  examples_dir, graph_dir, _, _ = toy
  config, _, result = beam_run
  assert result.sampler is None and result.metrics["examples"] == 64
  in_trainer = loop.evaluate(result.model, inputs_lib.Inputs.from_dirs(config, examples_dir,
                                                                        graph_dir))
  for key in ("mean_auc", "mean_gauc", "click/auc"):
    assert abs(result.metrics[key] - in_trainer[key]) < 1e-3, (key, result.metrics[key],
                                                                in_trainer[key])


def test_beam_export_serves_presampled_examples_and_has_no_rank(beam_run, tmp_path):
  """The export of a where=beam run: serving_default only, scoring the pre-sampled
  eval examples as the trained model does; the server names why `rank` is missing."""
  import grpc
  from e2e_grec.serving import export, models
  from e2e_grec.serving.protocol import ServingError
  _, beam, result = beam_run
  saved = export.export_saved_model(result.model, result.sampler, result.tables, beam,
                                    str(tmp_path / "1"))
  records = tf.constant(list(example_subgraphs.records(
      beam.sampling.subgraphs_dir, contracts.EVAL_SPLIT).as_numpy_iterator()))
  expected = export.Scorer(result.model, None, beam.export,
                           example_subgraphs.read_spec(beam.sampling.subgraphs_dir)
                           ).serve_examples(records)
  loaded = tf.saved_model.load(saved)
  assert set(loaded.signatures) == {"serving_default"}
  served = loaded.signatures["serving_default"](examples=records)
  np.testing.assert_allclose(served["score"].numpy(), expected["score"].numpy(), rtol=1e-5)
  servable = models.Servable("m", 1, saved)
  try:
    assert servable.warm_up() == 1  # The first pre-sampled eval example.
    with pytest.raises(ServingError, match="sampling.where=beam") as error:
      servable.signature("rank")
    assert error.value.code == grpc.StatusCode.NOT_FOUND
  finally:
    servable.close()


def test_where_is_a_checked_choice_and_beam_needs_the_subgraphs(toy):
  examples_dir, graph_dir, _, _ = toy
  with pytest.raises(ConfigError, match="sampling.where"):
    config_lib.load(overrides=["sampling.where=cluster"])
  with pytest.raises(ConfigError, match="sampling.subgraphs_dir"):
    inputs_lib.Inputs.from_dirs(_config(**{"sampling.where": "beam"}), examples_dir, graph_dir)
  # What needs the in-memory sampler says so before training.
  for needs_sampler, match in (({"model.mode": "two_stage"}, "model.mode=two_stage"),
                               ({"train.strategy": "parameter_server"}, "train.strategy")):
    with pytest.raises(ConfigError, match=match):
      inputs_lib.Inputs.from_dirs(_config(**{"sampling.where": "beam",
                                             "sampling.subgraphs_dir": "x", **needs_sampler}),
                                  examples_dir, None)


@pytest.mark.parametrize("baseline_mode", ["no_graph", "e2e"])
def test_dag_with_where_beam_runs_the_sampler_before_the_graph_trainers(tmp_path,
                                                                        baseline_mode):
  config = config_lib.Config().replace(**{"sampling.where": "beam",
                                          "eval.baseline_mode": baseline_mode})
  where = pipeline_lib.locations(config, str(tmp_path), str(tmp_path / "serving"),
                                 pipeline_lib.default_schema_file(), None)
  nodes = {c.id: c for c in pipeline_lib.create_pipeline(config, where).components}
  sampler = nodes["BeamSubgraphSampler"]
  assert isinstance(sampler, BeamSubgraphSampler)
  assert sampler.exec_properties[contracts.SEED_NODE_SET_KEY] == PER_EXAMPLE
  assert {n.id for n in sampler.upstream_nodes} == {"GraphBuilder", "ExampleGen"}
  feeds = {n.id for n in sampler.downstream_nodes}
  assert "Trainer" in feeds and ("BaselineTrainer" in feeds) == (baseline_mode != "no_graph")
  # The trainers take the subgraphs as their input channel, not by ordering only.
  subgraphs = sampler.outputs[contracts.SUBGRAPHS_KEY]
  assert nodes["Trainer"].inputs[contracts.SUBGRAPHS_KEY] is subgraphs
  trainer_only = config_lib.Config()
  nodes = pipeline_lib.create_pipeline(
      trainer_only, pipeline_lib.locations(trainer_only, str(tmp_path), str(tmp_path / "s"),
                                           pipeline_lib.default_schema_file(), None)).components
  assert not any(isinstance(c, BeamSubgraphSampler) for c in nodes)
