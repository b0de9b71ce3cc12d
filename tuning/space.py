"""The search space: Optuna distributions and their mapping to config overrides.

A trial's parameters are flat (`gnn`, `gnn_layers`, `fanout_hop0`, ...); the
fan-out of hop i exists only when `gnn_layers > i`, so `sampling.fanouts`
always has `model.gnn_layers` entries. Edge sets are switched in groups (the
user-video behaviour edges are always sampled); every edge set the graph
holds can be chosen at sampling time without rebuilding the graph.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

import optuna
from optuna.distributions import (BaseDistribution, CategoricalDistribution,
                                  FloatDistribution, IntDistribution)

from e2e_grec.config import Config

BEHAVIOUR_EDGE_SETS = ("click", "long_view", "like")
# Optional edge-set groups, each one boolean parameter `edges_<group>`.
EDGE_GROUPS: dict[str, tuple[str, ...]] = {
    "history": ("history",),
    "content": ("authored_by", "tagged"),
    "music": ("with_music",),
    "co_engage": ("co_engage",),
}
# Which config levels receive the GNN embeddings (model.fusion_level1/2).
FUSION = {"both": (True, True), "shared_bottom": (True, False), "towers": (False, True)}


@dataclasses.dataclass(frozen=True)
class SearchSpace:
  """Ranges searched; the defaults contain the shipped config."""
  gnns: tuple[str, ...] = ("graph_sage", "gatv2", "hgt")
  # Fan-out choices per hop; `gnn_layers` ranges over 1..len(fanouts).
  fanouts: tuple[tuple[int, ...], ...] = ((5, 10, 15), (3, 5, 10))
  gnn_hidden_dims: tuple[int, ...] = (16, 32, 64)
  embedding_dims: tuple[int, ...] = (8, 16, 32)
  bottoms: tuple[str, ...] = ("dcn", "mmoe")
  learning_rate: tuple[float, float] = (5e-4, 1e-2)
  max_epochs: int = 2
  gfae_mask_rate: tuple[float, float] = (0.1, 0.6)
  gfae_weight: tuple[float, float] = (0.1, 3.0)
  gradnorm_alpha: tuple[float, float] = (0.5, 2.5)

  def distributions(self) -> dict[str, BaseDistribution]:
    """Every parameter's distribution (fan-outs of deeper hops are conditional)."""
    dists: dict[str, BaseDistribution] = {
        "gnn": CategoricalDistribution(self.gnns),
        "gnn_layers": IntDistribution(1, len(self.fanouts)),
        **{f"fanout_hop{i}": CategoricalDistribution(c) for i, c in enumerate(self.fanouts)},
        "gnn_hidden_dim": CategoricalDistribution(self.gnn_hidden_dims),
        "embedding_dim": CategoricalDistribution(self.embedding_dims),
        "bottom": CategoricalDistribution(self.bottoms),
        "fusion": CategoricalDistribution(tuple(FUSION)),
        "learning_rate": FloatDistribution(*self.learning_rate, log=True),
        "epochs": IntDistribution(1, self.max_epochs),
        "gfae_mask_rate": FloatDistribution(*self.gfae_mask_rate),
        "gfae_weight": FloatDistribution(*self.gfae_weight, log=True),
        "gradnorm_alpha": FloatDistribution(*self.gradnorm_alpha),
    }
    dists.update({f"edges_{g}": CategoricalDistribution((True, False)) for g in EDGE_GROUPS})
    return dists

  def contains(self, params: dict[str, Any]) -> bool:
    """Whether every parameter is one this space draws, with a value in its range."""
    dists = self.distributions()
    for name, value in params.items():
      dist = dists.get(name)
      if dist is None:
        return False
      if isinstance(dist, CategoricalDistribution):
        if value not in dist.choices:
          return False
      elif not dist.low <= value <= dist.high:
        return False
    return True

  def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
    """Draws one trial's parameters (define-by-run, so hops follow the layer count)."""
    params = {}
    for name, dist in self.distributions().items():
      if name.startswith("fanout_hop") and int(name[len("fanout_hop"):]) >= params["gnn_layers"]:
        continue
      if isinstance(dist, CategoricalDistribution):
        params[name] = trial.suggest_categorical(name, dist.choices)
      elif isinstance(dist, IntDistribution):
        params[name] = trial.suggest_int(name, dist.low, dist.high, log=dist.log)
      else:
        params[name] = trial.suggest_float(name, dist.low, dist.high, log=dist.log)
    return params


def to_overrides(params: dict[str, Any]) -> dict[str, Any]:
  """Trial parameters -> `section.key` config values."""
  level1, level2 = FUSION[params["fusion"]]
  edge_sets = BEHAVIOUR_EDGE_SETS + tuple(
      s for g, sets in EDGE_GROUPS.items() if params[f"edges_{g}"] for s in sets)
  return {
      "model.gnn": params["gnn"],
      "model.gnn_layers": params["gnn_layers"],
      "sampling.fanouts": [params[f"fanout_hop{i}"] for i in range(params["gnn_layers"])],
      "sampling.edge_sets": list(edge_sets),
      "model.gnn_hidden_dim": params["gnn_hidden_dim"],
      "model.embedding_dim": params["embedding_dim"],
      "model.bottom": params["bottom"],
      "model.fusion_level1": level1,
      "model.fusion_level2": level2,
      "train.learning_rate": params["learning_rate"],
      "train.epochs": params["epochs"],
      "model.gfae_mask_rate": params["gfae_mask_rate"],
      "train.loss_weights": {"gfae": params["gfae_weight"]},
      "train.gradnorm_alpha": params["gradnorm_alpha"],
  }


def override_strings(values: dict[str, Any]) -> list[str]:
  """`--set` arguments; JSON is YAML, so lists and mappings parse back as written."""
  return [f"{key}={json.dumps(value)}" for key, value in values.items()]


def params_of(config: Config) -> dict[str, Any]:
  """The parameters of `config` (to enqueue the shipped config as a trial)."""
  sampled = set(config.sampling.edge_sets)
  levels = (config.model.fusion_level1, config.model.fusion_level2)
  fusion = next((name for name, value in FUSION.items() if value == levels), None)
  if fusion is None:
    raise ValueError("model.fusion_level1 and model.fusion_level2 are both off: "
                     "the search space has no such fusion choice")
  return {
      "gnn": config.model.gnn,
      "gnn_layers": config.model.gnn_layers,
      **{f"fanout_hop{i}": f for i, f in enumerate(config.sampling.fanouts)},
      "gnn_hidden_dim": config.model.gnn_hidden_dim,
      "embedding_dim": config.model.embedding_dim,
      "bottom": config.model.bottom,
      "fusion": fusion,
      "learning_rate": config.train.learning_rate,
      "epochs": config.train.epochs,
      "gfae_mask_rate": config.model.gfae_mask_rate,
      "gfae_weight": config.train.loss_weights.get("gfae", 1.0),
      "gradnorm_alpha": config.train.gradnorm_alpha,
      **{f"edges_{g}": set(sets) <= sampled for g, sets in EDGE_GROUPS.items()},
  }
