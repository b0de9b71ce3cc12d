"""The encoder, GFAE and the three modes on hand-built contract-shaped graphs."""
import e2e_grec  # noqa: F401  (legacy Keras before TensorFlow)
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_gnn as tfgnn

from e2e_grec import config as config_lib
from e2e_grec.models import encoder as encoder_lib
import toy_data
from e2e_grec.models.e2e_grec import E2EGRec
from e2e_grec.models.gfae import GraphFeatureAutoEncoder


@pytest.fixture(scope="module")
def toy():
  tables = toy_data.toy_node_tables()
  batch = toy_data.toy_batch(8)
  return tables, batch, toy_data.toy_graph_for_batch(tables, batch)


def _config(**overrides):
  return config_lib.Config().replace(**overrides)


@pytest.mark.parametrize("gnn", ["graph_sage", "gatv2", "hgt"])
def test_encoder_reads_out_one_state_per_example(toy, gnn):
  tables, batch, graph = toy
  encoder = encoder_lib.GraphEncoder(tables, _config(**{"model.gnn": gnn}).model)
  out = encoder_lib.readout(encoder(graph))
  assert set(out) == {"user", "video"}
  for states in out.values():
    assert states.shape == (8, 32)
    assert np.all(np.isfinite(states.numpy()))


def test_seed_mask_marks_exactly_the_readout_sources(toy):
  _, _, graph = toy
  mask = encoder_lib.seed_mask(graph, "user").numpy()
  seeds = np.unique(graph.edge_sets["_readout/user"].adjacency.source.numpy())
  assert np.flatnonzero(mask).tolist() == seeds.tolist()


def test_gfae_hides_masked_features_from_the_encoder(toy):
  tables, _, graph = toy
  config = _config().model
  encoder = encoder_lib.GraphEncoder(tables, config)
  gfae = GraphFeatureAutoEncoder(tables, mask_rate=0.5, seed=1)
  masks = gfae.sample_masks(graph)
  user_mask = masks["user"].numpy()
  assert user_mask.any(), "the toy graph should have masked users"
  assert not (user_mask & encoder_lib.seed_mask(graph, "user").numpy()).any()
  # Give every masked user other ids, hence other ID embeddings and side features.
  ids = graph.node_sets["user"]["id"].numpy()
  changed_ids = np.where(user_mask, (ids % toy_data.TOY_SIZES["user"]) + 1, ids)
  assert (changed_ids != ids).any()
  changed = graph.replace_features(node_sets={"user": {"id": tf.constant(changed_ids)}})
  before = encoder(graph, masks=masks)
  after = encoder(changed, masks=masks)
  for ns in ("user", "video"):
    np.testing.assert_allclose(before.node_sets[ns][tfgnn.HIDDEN_STATE].numpy(),
                               after.node_sets[ns][tfgnn.HIDDEN_STATE].numpy(), atol=1e-6)
  # Without masks the same change is visible.
  assert not np.allclose(encoder(graph).node_sets["user"][tfgnn.HIDDEN_STATE].numpy(),
                         encoder(changed).node_sets["user"][tfgnn.HIDDEN_STATE].numpy())


@pytest.mark.parametrize("loss", ["sce", "mse"])
def test_gfae_loss_decreases_on_a_toy_graph(toy, loss):
  tables, _, graph = toy
  encoder = encoder_lib.GraphEncoder(tables, _config().model)
  gfae = GraphFeatureAutoEncoder(tables, mask_rate=0.5, loss=loss, seed=0)
  optimizer = tf.keras.optimizers.Adam(1e-2)
  masks = gfae.sample_masks(graph)  # fixed masks: a deterministic objective

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      value = gfae(encoder(graph, masks=masks, training=True), masks)
    variables = encoder.trainable_variables + gfae.trainable_variables
    grads = tape.gradient(value, variables)
    optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
    return value

  losses = [float(step()) for _ in range(60)]
  assert losses[0] > 0
  assert np.mean(losses[-5:]) < 0.7 * losses[0]

def test_gfae_decoding_a_sample_of_masked_nodes_estimates_the_full_loss(toy):
  tables, _, graph = toy
  encoder = encoder_lib.GraphEncoder(tables, _config().model)
  full = GraphFeatureAutoEncoder(tables, mask_rate=0.5, seed=0)
  sampled = GraphFeatureAutoEncoder(tables, mask_rate=0.5, max_decoded=2, seed=0)
  masks = full.sample_masks(graph)
  encoded = encoder(graph, masks=masks)
  expected = float(full(encoded, masks))
  sampled(encoded, masks)
  sampled.set_weights(full.get_weights())
  for mask in masks.values():
    decoded = sampled._decoded(mask).numpy()
    assert len(decoded) == min(2, int(mask.numpy().sum()))
    assert len(set(decoded)) == len(decoded) and mask.numpy()[decoded].all()
  estimates = [float(sampled(encoded, masks)) for _ in range(300)]
  assert np.std(estimates) > 0  # Different draws score different nodes.
  assert abs(np.mean(estimates) - expected) < 0.05 * expected



def _model(mode, tables, **overrides):
  model = E2EGRec(tables, _config(**{"model.mode": mode, **overrides}))
  model.compile(optimizer=tf.keras.optimizers.Adam(1e-2))
  return model



@pytest.mark.parametrize("gnn,bottom,balancer", [("graph_sage", "dcn", "gradnorm"),
                                                 ("gatv2", "mmoe", "uncertainty"),
                                                 ("hgt", "dcn", "fixed")])
def test_train_step_traces_without_autograph(toy, gnn, bottom, balancer):
  """The trainer traces its steps with autograph off: no tensor-valued Python branching."""
  tables, batch, graph = toy
  model = _model("e2e", tables, **{"model.gnn": gnn, "model.bottom": bottom,
                                   "train.loss_balancer": balancer,
                                   "train.gradnorm_every_steps": 2})
  inputs = dict(batch, graph=graph)
  model(inputs)
  step = tf.function(model.train_step, autograph=False)
  for _ in range(2):  # Steps with and without a balancer update.
    logs = step(inputs)
  assert np.isfinite(float(logs["loss"]))

def test_e2e_every_ranking_loss_reaches_the_gnn(toy):
  tables, batch, graph = toy
  model = _model("e2e", tables)
  inputs = dict(batch, graph=graph)
  with tf.GradientTape(persistent=True) as tape:
    losses = model.compute_losses(inputs, training=True)
  gnn_variables = model.encoder.trainable_variables
  assert gnn_variables
  for task in model.task_names + ("gfae",):
    grads = [g for g in tape.gradient(losses[task], gnn_variables) if g is not None]
    assert grads, f"no gradient path from {task} to the GNN"
    assert float(tf.linalg.global_norm(grads)) > 0, f"zero GNN gradient from {task}"


def test_two_stage_never_updates_the_gnn(toy):
  tables, batch, graph = toy
  model = _model("two_stage", tables)
  model(dict(batch, graph=graph))
  assert model.encoder.weights and not model.encoder.trainable_variables
  before = [w.numpy().copy() for w in model.encoder.weights]
  precomputed = dict(batch, user_gnn=tf.random.normal([8, 32]),
                     video_gnn=tf.random.normal([8, 32]))
  for inputs in (precomputed, dict(batch, graph=graph)):
    with tf.GradientTape() as tape:
      losses = model.compute_losses(inputs, training=True)
    grads = tape.gradient(list(losses.values()), model.encoder.weights)
    assert all(g is None for g in grads)
  for inputs in (precomputed, dict(batch, graph=graph)):
    model.train_step(inputs)
  for old, new in zip(before, model.encoder.weights):
    np.testing.assert_array_equal(old, new.numpy())


@pytest.mark.parametrize("mode", ["e2e", "no_graph"])
def test_call_returns_probabilities_and_stay(toy, mode):
  tables, batch, graph = toy
  model = _model(mode, tables, **{"model.bottom": "mmoe"})
  out = model(dict(batch, graph=graph))
  assert set(out) == {"click", "long_view", "like", "skip", "stay"}
  for task in ("click", "long_view", "like", "skip"):
    values = out[task].numpy()
    assert values.shape == (8,) and np.all((values > 0) & (values < 1))
  assert out["stay"].shape == (8,)


def test_graph_modes_need_a_graph(toy):
  tables, batch, _ = toy
  with pytest.raises(ValueError, match="needs input 'graph'"):
    _model("e2e", tables)(batch)


def test_gradnorm_reference_is_the_best_constant_prediction(toy):
  tables, batch, _ = toy
  model = _model("no_graph", tables)
  reference = model.reference_losses(batch)
  p = batch["click"].numpy().mean()
  assert np.isclose(float(reference["click"]), -(p * np.log(p) + (1 - p) * np.log(1 - p)),
                    rtol=1e-5)
  assert np.isclose(float(reference["stay"]), batch["stay"].numpy().var(), rtol=1e-5)


def test_gradnorm_updates_only_every_n_steps(toy):
  tables, batch, graph = toy
  model = _model("e2e", tables, **{"train.gradnorm_every_steps": 2})
  weights = []
  for _ in range(4):
    logs = model.train_step(dict(batch, graph=graph))
    weights.append(model.balancer.loss_weights().numpy())
    step = int(model.optimizer.iterations.numpy())
    assert (float(logs["grad_norm/click"]) > 0) == (step % 2 == 0)
  np.testing.assert_array_equal(weights[0], np.ones(6))  # step 1: no update yet
  assert not np.allclose(weights[1], weights[0])
  np.testing.assert_array_equal(weights[2], weights[1])


@pytest.mark.parametrize("gnn", ["graph_sage", "gatv2"])
def test_last_round_on_read_nodes_only_is_exact(toy, gnn):
  """Pruning the last round to edges into seeds and masked nodes changes none of their states."""
  tables, _, graph = toy
  encoder = encoder_lib.GraphEncoder(tables, _config(**{"model.gnn": gnn}).model)
  masks = GraphFeatureAutoEncoder(tables, mask_rate=0.5, seed=3).sample_masks(graph)
  pruned = encoder(graph, masks=masks)
  full_graph = encoder.node_inputs(graph, masks=masks)
  for update in encoder.rounds:
    full_graph = update(full_graph)
  for ns in ("user", "video"):
    read = encoder_lib.seed_mask(graph, ns).numpy() | masks[ns].numpy()
    assert read.sum() < len(read), "the toy graph should have nodes nobody reads"
    np.testing.assert_allclose(pruned.node_sets[ns][tfgnn.HIDDEN_STATE].numpy()[read],
                               full_graph.node_sets[ns][tfgnn.HIDDEN_STATE].numpy()[read],
                               rtol=1e-5, atol=1e-6)
  pruned_edges = sum(int(e.sizes[0]) for e in encoder_lib.edges_into(
      graph, {"user": masks["user"], "video": masks["video"]}).edge_sets.values())
  assert pruned_edges < sum(int(e.sizes[0]) for e in graph.edge_sets.values())


def test_train_step_adds_regularisation_losses(toy):
  tables, batch, _ = toy
  model = _model("no_graph", tables, **{"train.loss_balancer": "fixed"})
  model(batch)
  model.add_loss(lambda: tf.constant(5.0))
  logs = model.train_step(batch)
  task_losses = sum(float(v) for k, v in logs.items() if k.startswith("loss/"))
  assert np.isclose(float(logs["loss"]), task_losses + 5.0, rtol=1e-5)


def test_node_inputs_of_repeated_nodes_match_row_by_row(toy):
  """Projecting each distinct node once gives every row (masked or not) its own input's state."""
  tables, _, toy_graph = toy
  # The same users under several cutoffs: few ids over many nodes.
  graph = toy_graph.replace_features(node_sets={ns: {"id": toy_graph.node_sets[ns]["id"] % 3 + 1}
                                                for ns in ("user", "video")})
  node_inputs = encoder_lib.GraphEncoder(tables, _config().model).node_inputs
  masks = GraphFeatureAutoEncoder(tables, mask_rate=0.5, seed=2).sample_masks(graph)
  states = node_inputs(graph, masks=masks).node_sets
  for ns, mask in masks.items():
    assert mask.numpy().any() and len(np.unique(graph.node_sets[ns]["id"])) < len(mask)
    rows = node_inputs.node_input(ns, graph.node_sets[ns]["id"])
    rows = tf.where(mask[:, None], node_inputs._mask_token[ns][None, :], rows)
    np.testing.assert_allclose(states[ns][tfgnn.HIDDEN_STATE].numpy(),
                               node_inputs._project[ns](rows).numpy(), rtol=1e-5, atol=1e-6)
