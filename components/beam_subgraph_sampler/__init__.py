"""TFX component materialising subgraphs with Beam: per example (day cutoffs) or per node."""
from e2e_grec.components.beam_subgraph_sampler.component import PER_EXAMPLE, BeamSubgraphSampler

__all__ = ["BeamSubgraphSampler", "PER_EXAMPLE"]
