"""Graph refresh work: `serving.graph_refresh` on artifact directories.

Remote URIs (Kubeflow) are staged through local directories, as the other
executors do; the model is exported under the `Model` artifact's
`Format-Serving`, where the Pusher looks for it.
"""
from __future__ import annotations

import contextlib
from typing import Any

from tfx.dsl.components.base import base_beam_executor, base_executor
from tfx.types import artifact, artifact_utils
from tfx.types.standard_component_specs import EXAMPLES_KEY, MODEL_KEY, MODEL_RUN_KEY
from tfx.utils import path_utils

from e2e_grec import contracts
from e2e_grec.components import staging
from e2e_grec.components.example_gen import executor as example_gen_executor


def _trained(input_dict: dict[str, list[artifact.Artifact]], stack: contextlib.ExitStack):
  from e2e_grec.serving import graph_refresh  # TensorFlow: only when executing

  run_dir = artifact_utils.get_single_uri(input_dict[MODEL_RUN_KEY])
  return graph_refresh.TrainedModel.load(stack.enter_context(staging.input_dir(run_dir)))


class RefreshedGraphBuilderExecutor(base_beam_executor.BaseBeamExecutor):
  """Steps 1-3: the Examples (train split) and the Graph of the refresh window."""

  def Do(self, input_dict: dict[str, list[artifact.Artifact]],
         output_dict: dict[str, list[artifact.Artifact]],
         exec_properties: dict[str, Any]) -> None:
    from e2e_grec.serving import graph_refresh

    self._log_startup(input_dict, output_dict, exec_properties)
    config = contracts.decode_config(exec_properties[contracts.CONFIG_KEY])
    examples = artifact_utils.get_single_instance(output_dict[EXAMPLES_KEY])
    graph = artifact_utils.get_single_instance(output_dict[contracts.GRAPH_KEY])
    with contextlib.ExitStack() as stack:
      trained = _trained(input_dict, stack)
      refreshed = graph_refresh.build_refreshed_graph(
          trained, stack.enter_context(staging.input_dir(
              exec_properties[contracts.DATA_DIR_KEY])),
          stack.enter_context(staging.output_dir(examples.uri)),
          stack.enter_context(staging.output_dir(graph.uri)),
          exec_properties[contracts.THROUGH_KEY] or None, config,
          beam_args=self._beam_pipeline_args)
    # Only the train split holds the window; the eval split is empty by design.
    example_gen_executor.describe(examples, [contracts.TRAIN_SPLIT])
    graph.set_string_custom_property("through", refreshed.through)
    for node_set, count in refreshed.new_nodes.items():
      graph.set_int_custom_property(f"new_{node_set}_nodes", count)


class RefreshExporterExecutor(base_executor.BaseExecutor):
  """Step 4: the trained weights on the refreshed graph, exported to Format-Serving."""

  def Do(self, input_dict: dict[str, list[artifact.Artifact]],
         output_dict: dict[str, list[artifact.Artifact]],
         exec_properties: dict[str, Any]) -> None:
    from e2e_grec.serving import graph_refresh

    config = contracts.decode_config(exec_properties[contracts.CONFIG_KEY])
    model = artifact_utils.get_single_instance(output_dict[MODEL_KEY])
    with contextlib.ExitStack() as stack:
      trained = _trained(input_dict, stack)
      refreshed = graph_refresh.RefreshedGraph.load(*(
          stack.enter_context(staging.input_dir(artifact_utils.get_single_uri(input_dict[key])))
          for key in (EXAMPLES_KEY, contracts.GRAPH_KEY)))
      result = graph_refresh.export_refreshed(
          trained, refreshed, config,
          stack.enter_context(staging.output_dir(path_utils.serving_model_path(model.uri))))
    model.set_string_custom_property("refreshed_from", trained.model_dir)
    model.set_float_custom_property("refresh_seconds", result.report["seconds"])
