"""Offline ranking metrics over a whole split, as JSON and a markdown table.

Binary tasks: AUC, GAUC (AUC of each user with both classes, averaged with
weights = the user's impressions; Zhou et al., KDD 2018) and logloss. The
regression task `stay`: RMSE and Spearman rank correlation. `mean_gauc` and
`mean_auc` average over the binary tasks: the headline numbers.
"""
from __future__ import annotations

import json
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats
from sklearn import metrics as sk_metrics

_EPS = 1e-7


def gauc(users: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> float:
  """Impression-weighted mean per-user AUC over users with both classes."""
  frame = pd.DataFrame({"user": users, "label": labels.astype(np.int64), "score": scores})
  frame["pos_rank"] = frame.groupby("user")["score"].rank(method="average") * frame.label
  per_user = frame.groupby("user").agg(n=("label", "size"), pos=("label", "sum"),
                                       pos_rank=("pos_rank", "sum"))
  per_user = per_user[(per_user.pos > 0) & (per_user.pos < per_user.n)]
  if per_user.empty:
    return float("nan")
  neg = per_user.n - per_user.pos
  auc = (per_user.pos_rank - per_user.pos * (per_user.pos + 1) / 2) / (per_user.pos * neg)
  return float(np.average(auc, weights=per_user.n))


def binary_metrics(users: np.ndarray, labels: np.ndarray, probs: np.ndarray) -> dict:
  probs = np.clip(probs.astype(np.float64), _EPS, 1 - _EPS)
  both = 0 < labels.sum() < labels.size
  return {
      "auc": float(sk_metrics.roc_auc_score(labels, probs)) if both else float("nan"),
      "gauc": gauc(users, labels, probs),
      "logloss": float(sk_metrics.log_loss(labels, probs, labels=[0, 1])),
      "positive_rate": float(labels.mean()) if labels.size else float("nan"),
  }


def regression_metrics(labels: np.ndarray, predictions: np.ndarray) -> dict:
  return {
      "rmse": float(np.sqrt(np.mean((labels - predictions) ** 2))),
      "spearman": float(stats.spearmanr(labels, predictions).statistic),
  }


def evaluate(users: np.ndarray, labels: Mapping[str, np.ndarray],
             predictions: Mapping[str, np.ndarray], binary_tasks: Sequence[str],
             regression_tasks: Sequence[str]) -> dict:
  """All metrics of one split; keys `<task>/<metric>` plus `mean_gauc`, `mean_auc`."""
  out: dict[str, float] = {"examples": int(len(users))}
  for t in binary_tasks:
    for k, v in binary_metrics(users, labels[t], predictions[t]).items():
      out[f"{t}/{k}"] = v
  for t in regression_tasks:
    for k, v in regression_metrics(labels[t], predictions[t]).items():
      out[f"{t}/{k}"] = v
  out["mean_gauc"] = float(np.nanmean([out[f"{t}/gauc"] for t in binary_tasks]))
  out["mean_auc"] = float(np.nanmean([out[f"{t}/auc"] for t in binary_tasks]))
  return out


def to_json(metrics: Mapping[str, float]) -> str:
  return json.dumps(dict(metrics), indent=2, sort_keys=True)


def to_markdown(metrics: Mapping[str, float], binary_tasks: Sequence[str],
                regression_tasks: Sequence[str]) -> str:
  """One row per task: AUC / GAUC / logloss, or RMSE / Spearman."""
  lines = ["| task | AUC | GAUC | logloss | RMSE | Spearman |",
           "|---|---|---|---|---|---|"]
  for t in binary_tasks:
    lines.append(f"| {t} | {metrics[f'{t}/auc']:.4f} | {metrics[f'{t}/gauc']:.4f} | "
                 f"{metrics[f'{t}/logloss']:.4f} | | |")
  for t in regression_tasks:
    lines.append(f"| {t} | | | | {metrics[f'{t}/rmse']:.4f} | "
                 f"{metrics[f'{t}/spearman']:.4f} |")
  lines.append(f"| **mean (binary)** | {metrics['mean_auc']:.4f} | "
               f"{metrics['mean_gauc']:.4f} | | | |")
  return "\n".join(lines) + "\n"
