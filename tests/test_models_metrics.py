"""Offline metrics: GAUC against a per-user reference, the table, edge cases."""
import numpy as np
from sklearn.metrics import roc_auc_score

from e2e_grec.models import metrics


def test_gauc_is_the_impression_weighted_mean_of_per_user_auc():
  rng = np.random.default_rng(0)
  users = rng.integers(0, 40, 3000)
  labels = rng.integers(0, 2, 3000)
  scores = np.round(rng.random(3000) + 0.3 * labels, 2)  # with ties
  aucs, weights = [], []
  for u in np.unique(users):
    m = users == u
    if 0 < labels[m].sum() < m.sum():
      aucs.append(roc_auc_score(labels[m], scores[m]))
      weights.append(m.sum())
  assert np.isclose(metrics.gauc(users, labels, scores), np.average(aucs, weights=weights))


def test_gauc_skips_users_with_one_class():
  users = np.array([1, 1, 2, 2, 2])
  labels = np.array([0, 1, 1, 1, 1])
  scores = np.array([0.2, 0.8, 0.1, 0.2, 0.3])
  assert metrics.gauc(users, labels, scores) == 1.0
  assert np.isnan(metrics.gauc(users[2:], labels[2:], scores[2:]))


def test_evaluate_and_markdown():
  users = np.array([1, 1, 2, 2])
  labels = {"click": np.array([0, 1, 1, 0]), "stay": np.array([0.0, 1.0, 2.0, 3.0])}
  preds = {"click": np.array([0.1, 0.9, 0.8, 0.3]), "stay": np.array([0.0, 1.5, 2.0, 2.5])}
  out = metrics.evaluate(users, labels, preds, ["click"], ["stay"])
  assert out["click/auc"] == 1.0 and out["click/gauc"] == 1.0 and out["mean_gauc"] == 1.0
  assert np.isclose(out["stay/rmse"], np.sqrt(0.125)) and out["stay/spearman"] == 1.0
  table = metrics.to_markdown(out, ["click"], ["stay"])
  assert "| click | 1.0000 | 1.0000 |" in table and "| stay |" in table
