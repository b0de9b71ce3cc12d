"""TFX component materialising subgraphs with TF-GNN's Beam sampler."""
from e2e_grec.components.beam_subgraph_sampler.component import BeamSubgraphSampler

__all__ = ["BeamSubgraphSampler"]
