"""GradNorm reaches its gradient-norm targets; fixed weights do not."""
import e2e_grec  # noqa: F401  (legacy Keras before TensorFlow)
import numpy as np
import pytest
import tensorflow as tf

from e2e_grec import config as config_lib
from e2e_grec.models import loss_balancing


def _train_two_tasks(balancer, steps=300):
  """Two regression heads on one shared layer; task b's loss is 50x larger.

  Returns log(G_a / G_b) - log(target_a / target_b) over training, where
  G_i = ||grad_W w_i L_i|| on the shared layer and target_i ∝ r_i ** alpha.
  """
  rng = np.random.default_rng(0)
  x = tf.constant(rng.normal(size=(256, 8)), tf.float32)
  y_a = tf.constant(x.numpy() @ rng.normal(size=(8, 1)), tf.float32)
  y_b = tf.constant(x.numpy() @ rng.normal(size=(8, 1)), tf.float32)
  shared = tf.keras.layers.Dense(16, activation="tanh")
  head_a, head_b = tf.keras.layers.Dense(1), tf.keras.layers.Dense(1)
  optimizer = tf.keras.optimizers.Adam(1e-2)
  initial = {}
  gaps = []
  for _ in range(steps):
    with tf.GradientTape(persistent=True) as tape:
      h = shared(x)
      losses = {"a": tf.reduce_mean(tf.square(head_a(h) - y_a)),
                "b": 50.0 * tf.reduce_mean(tf.square(head_b(h) - y_b))}
      total = balancer.combine(losses)
    variables = shared.trainable_variables + head_a.trainable_variables + \
        head_b.trainable_variables
    optimizer.apply_gradients(zip(tape.gradient(total, variables), variables))
    norms = {n: tf.linalg.global_norm(tape.gradient(l, shared.trainable_variables))
             for n, l in losses.items()}
    weights = balancer.loss_weights().numpy()
    g = np.array([weights[0] * norms["a"].numpy(), weights[1] * norms["b"].numpy()])
    initial = initial or {n: float(l) for n, l in losses.items()}
    ratio = np.array([float(losses[n]) / initial[n] for n in ("a", "b")])
    target = (ratio / ratio.mean()) ** 1.5
    gaps.append(abs(np.log(g[0] / g[1]) - np.log(target[0] / target[1])))
    balancer.update(losses, norms)
  return np.array(gaps)


def test_gradnorm_moves_the_gradient_norm_ratio_to_its_target():
  balancer = loss_balancing.GradNorm(("a", "b"), alpha=1.5, learning_rate=0.05)
  gaps = _train_two_tasks(balancer)
  assert gaps[0] > 2.0  # 50x loss scale: far from balanced at the start
  assert np.median(gaps[-50:]) < 0.5
  weights = balancer.loss_weights().numpy()
  np.testing.assert_allclose(weights.sum(), 2.0, rtol=1e-5)
  assert weights[0] > 10 * weights[1]


def test_fixed_weights_leave_the_ratio_off_target():
  gaps = _train_two_tasks(loss_balancing.FixedWeights(("a", "b")))
  assert np.median(gaps[-50:]) > 2.0


def test_uncertainty_weighting_learns_log_variances():
  balancer = loss_balancing.UncertaintyWeighting(("a", "b"))
  losses = {"a": tf.constant(0.1), "b": tf.constant(5.0)}
  optimizer = tf.keras.optimizers.SGD(0.1)
  for _ in range(50):
    with tf.GradientTape() as tape:
      total = balancer.combine(losses)
    optimizer.apply_gradients(zip(tape.gradient(total, balancer.trainable_variables),
                                  balancer.trainable_variables))
  weights = balancer.loss_weights().numpy()
  assert weights[0] > weights[1]  # the larger loss gets the smaller weight


def test_make_balancer_follows_the_config():
  for name, cls in (("gradnorm", loss_balancing.GradNorm),
                    ("fixed", loss_balancing.FixedWeights),
                    ("uncertainty", loss_balancing.UncertaintyWeighting)):
    config = config_lib.Config().replace(**{"train.loss_balancer": name}).train
    assert isinstance(loss_balancing.make_balancer(config, ("a",)), cls)


def test_missing_loss_is_named():
  balancer = loss_balancing.FixedWeights(("a", "b"))
  with pytest.raises(ValueError, match=r"\['b'\]"):
    balancer.combine({"a": tf.constant(1.0)})
