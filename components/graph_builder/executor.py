"""GraphBuilder executor: runs `build_graph` into the output artifact's URI."""
from __future__ import annotations

from typing import Any

from tfx import types
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact_utils, standard_component_specs

from e2e_grec import contracts
from e2e_grec.graph import builder


class Executor(base_beam_executor.BaseBeamExecutor):
  """Builds the graph with the pipeline's Beam options."""

  def Do(self, input_dict: dict[str, list[types.Artifact]],
         output_dict: dict[str, list[types.Artifact]],
         exec_properties: dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    examples = artifact_utils.get_single_instance(
        input_dict[standard_component_specs.EXAMPLES_KEY])
    graph = artifact_utils.get_single_instance(output_dict[contracts.GRAPH_KEY])
    config = contracts.decode_config(exec_properties[contracts.CONFIG_KEY])
    manifest = builder.build_graph(config, examples.uri, graph.uri,
                                   beam_args=self._beam_pipeline_args)
    graph.set_int_custom_property("num_nodes", sum(
        ns.nodes for ns in manifest.node_sets.values()))
    graph.set_int_custom_property("num_edges", manifest.num_edges)
    graph.set_int_custom_property("num_dropped", manifest.num_dropped)
    graph.set_float_custom_property("build_seconds", manifest.build_seconds)
