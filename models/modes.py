"""The three training modes, each a typed `Mode` that states what it does.

Every mode-dependent decision (model, training, export) reads one of these
objects instead of testing the `model.mode` string:

| mode      | GNN encoder | trains with ranker | GFAE in loss | pretrained | precomputed |
|-----------|-------------|--------------------|--------------|------------|-------------|
| e2e       | yes         | yes                | if gfae      | no         | no          |
| two_stage | yes, frozen | no                 | no           | yes        | yes         |
| no_graph  | no          | -                  | no           | no         | no          |

Export: a mode with an encoder serves with the subgraph sampler inside the
SavedModel (requests carry ids only); no_graph serves the ranker alone.
"""
from __future__ import annotations

import dataclasses

from e2e_grec.config import Config, ConfigError, ModelConfig


@dataclasses.dataclass(frozen=True)
class Mode:
  """What one mode does with the GNN."""
  name: str
  # A GNN encoder reads a sampled subgraph (also: export samples in-model).
  has_encoder: bool
  # The ranking losses back-propagate into the encoder (the end-to-end claim).
  encoder_trains_with_ranker: bool
  # The encoder is pretrained apart (GFAE + link prediction), then frozen.
  pretrains_encoder: bool
  # Ranker training reads precomputed embeddings instead of sampling.
  reads_precomputed: bool

  def trains_gfae(self, model: ModelConfig) -> bool:
    """Whether the GFAE loss joins the balanced ranking losses."""
    return self.encoder_trains_with_ranker and model.gfae


E2E = Mode("e2e", has_encoder=True, encoder_trains_with_ranker=True,
           pretrains_encoder=False, reads_precomputed=False)
TWO_STAGE = Mode("two_stage", has_encoder=True, encoder_trains_with_ranker=False,
                 pretrains_encoder=True, reads_precomputed=True)
NO_GRAPH = Mode("no_graph", has_encoder=False, encoder_trains_with_ranker=False,
                pretrains_encoder=False, reads_precomputed=False)
MODES = {m.name: m for m in (E2E, TWO_STAGE, NO_GRAPH)}


def of(config: Config) -> Mode:
  """The mode `model.mode` names."""
  try:
    return MODES[config.model.mode]
  except KeyError:
    raise ConfigError(f"model.mode: {config.model.mode!r} is not one of "
                      f"{', '.join(MODES)}") from None
