"""TFX component wrapping the Beam graph builder (`e2e_grec.graph.builder`)."""
from e2e_grec.components.graph_builder.component import GraphBuilder

__all__ = ["GraphBuilder"]
