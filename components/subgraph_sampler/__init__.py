"""TFX component materialising subgraphs with TF-GNN's Beam sampler."""
from e2e_grec.components.subgraph_sampler.component import SubgraphSampler

__all__ = ["SubgraphSampler"]
