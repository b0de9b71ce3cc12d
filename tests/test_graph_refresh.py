"""Graph refresh: trained weights + newer logs -> a new served version, no training.

A tiny e2e model is trained (two steps) on synthetic logs of 04-25..04-28;
the refresh data adds 04-29..04-30 plus a brand-new user and video and one
chosen interaction on 04-29. One hop with a fan-out above every degree makes
the sampled subgraph the whole admissible neighbourhood, so stale and
refreshed versions must agree exactly wherever the refresh adds nothing visible.

Beam runs twice in the module: the training graph, and the one refresh that
every test reads (run while a server answers requests, so it is also the
swap test). The refusals stop before any graph build.
"""
import csv
import functools
import json
import os
import shutil
import threading

import e2e_grec  # noqa: F401  (legacy Keras before TensorFlow)
import grpc
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_service_pb2_grpc

from e2e_grec import config as config_lib
from e2e_grec import contracts
from e2e_grec.datasets import kuairand, node_tables, prepare, synthetic, vocab
from e2e_grec.datasets.dates import day_of
from e2e_grec.graph import builder
from e2e_grec.serving import export, graph_refresh, requests, server as server_lib
from e2e_grec.training import run as run_lib
from e2e_grec.training.inputs import load_split

MODEL = "e2e_grec"
NEW_USER, NEW_VIDEO = 5000, 9000
# The chosen interaction, added on ADDED_DAY (the first day after training).
ADDED_DAY = day_of("2022-04-29")
CONFIG = config_lib.Config().replace(**{
    "synthetic.users": 120, "synthetic.videos": 90, "synthetic.authors": 20,
    "synthetic.tags": 8, "synthetic.musics": 12, "synthetic.tabs": 3, "synthetic.days": 6,
    "synthetic.impressions": 2500, "synthetic.history_length": 5,
    "data.train_end": "2022-04-28", "data.eval_start": "2022-04-29",
    "data.eval_end": "2022-04-30", "graph.shards": 2,
    "model.gnn_hidden_dim": 8, "model.embedding_dim": 4,
    "model.bottom_units": [8], "model.tower_units": [4], "model.cross_layers": 1,
    "sampling.fanouts": [10_000], "train.batch_size": 256, "train.max_train_steps": 2,
    "serving.poll_seconds": 0.2, "serving.host": "127.0.0.1", "serving.grpc_port": 0,
    "serving.rest_port": 0})


def _append_rows(path: str, rows: list[dict]) -> None:
  with open(path, newline="") as f:
    header = next(csv.reader(f))
  with open(path, "a", newline="") as f:
    writer = csv.DictWriter(f, header)
    writer.writerows(rows)


def _first_row(path: str) -> dict:
  with open(path, newline="") as f:
    return next(csv.DictReader(f))


def _known_pair(examples_dir: str) -> tuple[int, int]:
  """A trained user and video that never met in the training window."""
  seen = load_split(examples_dir, contracts.TRAIN_SPLIT)
  pairs = set(zip(seen["user_id"].tolist(), seen["video_id"].tolist()))
  user = int(seen["user_id"][0])
  video = next(int(v) for v in np.unique(seen["video_id"]) if (user, int(v)) not in pairs)
  return user, video


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  """Data dir, trained model dir, the stale served version and the added pair."""
  root = tmp_path_factory.mktemp("refresh")
  data = str(root / "data")
  synthetic.generate(CONFIG.synthetic, data)
  examples, graph = str(root / "examples"), str(root / "graph")
  prepare.prepare(CONFIG, data, examples)
  builder.build_graph(CONFIG, examples, graph)
  model_dir = str(root / "model")
  result = run_lib.run(CONFIG, examples, graph, model_dir)
  serving = str(root / "serving" / MODEL)
  export.export_saved_model(result.model, result.sampler, result.tables, CONFIG,
                            os.path.join(serving, "1"))
  user, video = _known_pair(examples)
  log = next(p for p in os.listdir(data) if p.startswith("log_standard"))
  template = _first_row(os.path.join(data, log))
  time_ms = 1651190400000 + 3_600_000  # 2022-04-29 01:00 (UTC+8 logs)
  event = dict(template, date="20220429", hourmin="100", is_click="1", long_view="1",
               play_time_ms="20000")
  _append_rows(os.path.join(data, log), [
      dict(event, user_id=user, video_id=video, time_ms=time_ms),
      dict(event, user_id=NEW_USER, video_id=video, time_ms=time_ms + 1),
      dict(event, user_id=user, video_id=NEW_VIDEO, time_ms=time_ms + 2)])
  _append_rows(os.path.join(data, kuairand.USER_FEATURES),
               [dict(_first_row(os.path.join(data, kuairand.USER_FEATURES)),
                     user_id=NEW_USER, follow_user_num="7")])
  _append_rows(os.path.join(data, kuairand.VIDEO_FEATURES),
               [dict(_first_row(os.path.join(data, kuairand.VIDEO_FEATURES)),
                     video_id=NEW_VIDEO, video_duration="12345.0")])
  return {"root": root, "data": data, "examples": examples, "model_dir": model_dir,
          "serving": serving, "user": user, "video": video}


@pytest.fixture(scope="module")
def swap(setup):
  """The refresh, run into the served directory while requests keep flowing."""
  server = server_lib.ModelServer(os.path.dirname(setup["serving"]), CONFIG.serving).start()
  request = requests.rank_request(MODEL, setup["user"], [setup["video"], 2], 1, 9,
                                  ADDED_DAY + 1)
  versions, errors, stop = [], [], threading.Event()

  def keep_asking():
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
      stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
      while not stop.is_set():
        try:
          versions.append(stub.Predict(request, timeout=30).model_spec.version.value)
        except grpc.RpcError as e:
          errors.append(e)

  thread = threading.Thread(target=keep_asking)
  thread.start()
  try:
    result = graph_refresh.refresh_graph(setup["model_dir"], setup["data"], setup["serving"],
                                         CONFIG)
    version = int(os.path.basename(result.version_dir))
    for _ in range(1200):  # Up to 120 s: loading a version is slow on a busy machine.
      if versions and versions[-1] == version:
        break
      stop.wait(0.1)
    listing = sorted(os.listdir(setup["serving"]))
  finally:
    stop.set()
    thread.join()
    server.stop()
  return {"result": result, "version": version, "versions": versions, "errors": errors,
          "listing": listing}


@pytest.fixture(scope="module")
def refreshed(swap):
  return swap["result"]


@functools.lru_cache(maxsize=None)
def _rank_signature(version_dir: str):
  return tf.saved_model.load(version_dir).signatures[requests.RANK_SIGNATURE]


def _rank(version_dir: str, user: int, videos, day: int) -> dict[str, np.ndarray]:
  signature = _rank_signature(version_dir)
  rows = requests.rank_rows(user, videos, tab=1, hour=9, day=day)
  out = signature(**{name: tf.constant(value) for name, value in rows.items()})
  return {k: v.numpy() for k, v in out.items()}


def _has_edge(sampler, user: int, video: int, day: int, edge_set: str = "click") -> bool:
  """Whether the user seed's subgraph for a request on `day` holds user -> video."""
  graph = sampler(tf.constant([user], tf.int64), tf.constant([-1], tf.int64),
                  tf.constant([day], tf.int64))
  tables = sampler.node_tables
  edges = graph.edge_sets[edge_set].adjacency
  users = tf.gather(graph.node_sets["user"]["id"], edges.source).numpy()
  videos = tf.gather(graph.node_sets["video"]["id"], edges.target).numpy()
  u, v = (tables.lookup(ns, tf.constant(i, tf.int64)).numpy()
          for ns, i in (("user", user), ("video", video)))
  return bool(np.any((users == u) & (videos == v)))


def test_reference_build_reproduces_the_trained_tables(setup):
  arrays = node_tables.load_arrays(os.path.join(setup["examples"], contracts.NODE_TABLES_FILE))
  layout = kuairand.discover(setup["data"])
  quarantine = kuairand.Quarantine()
  users, _ = kuairand.read_table(layout.user_features, kuairand.USER_SPEC, quarantine)
  videos, _ = kuairand.read_table(layout.video_features, kuairand.VIDEO_SPEC, quarantine)
  history, _ = kuairand.read_history(layout.user_history, quarantine)
  rows = load_split(setup["examples"], contracts.TRAIN_SPLIT)
  columns = contracts.ID_FEATURES + (contracts.TAB,)
  rebuilt = vocab.build(pd.DataFrame({k: rows[k] for k in columns}),
                        users, videos, history, day_of(CONFIG.data.train_start),
                        reference=arrays)
  assert sorted(rebuilt) == sorted(arrays)
  for key, value in arrays.items():
    np.testing.assert_array_equal(rebuilt[key], value, err_msg=key)


def test_new_nodes_get_side_features_and_known_ones_keep_theirs(setup, refreshed):
  trained = node_tables.load_arrays(os.path.join(setup["model_dir"], contracts.NODE_TABLES_FILE))
  tables = refreshed.tables
  assert refreshed.report["new_nodes"]["user"] >= 1
  assert refreshed.report["new_nodes"]["video"] >= 1
  for ns in ("user", "video"):
    ids = trained[f"{ns}/ids"]
    index = tables.lookup(ns, tf.constant(ids)).numpy()
    assert np.all(index > 0)
    for part in ("dense", "categorical"):
      np.testing.assert_array_equal(getattr(tables, part)(ns, index).numpy(),
                                    trained[f"{ns}/{part}"][1:], err_msg=f"{ns}/{part}")
  new_user = tables.lookup("user", tf.constant([NEW_USER], tf.int64))
  new_video = tables.lookup("video", tf.constant([NEW_VIDEO], tf.int64))
  assert int(new_user[0]) > 0 and int(new_video[0]) > 0
  assert np.any(tables.dense("user", new_user).numpy() != 0)
  assert np.any(tables.dense("video", new_video).numpy() != 0)


def test_id_embeddings_keep_trained_rows_and_new_nodes_get_the_oov_row(setup, refreshed):
  trained = node_tables.load_arrays(os.path.join(setup["model_dir"], contracts.NODE_TABLES_FILE))
  embeddings = [v for v in refreshed.model.variables if "user_id/embeddings" in v.name]
  assert embeddings
  reader = tf.train.load_checkpoint(graph_refresh.TrainedModel.load(
      setup["model_dir"]).weights)
  stored = [reader.get_tensor(k) for k, shape in reader.get_variable_to_shape_map().items()
            if k.endswith("embeddings/.ATTRIBUTES/VARIABLE_VALUE") and "OPTIMIZER" not in k
            and shape == [len(trained["user/ids"]) + 1, CONFIG.model.embedding_dim]]
  assert len(stored) == len(embeddings)
  index = refreshed.tables.lookup("user", tf.constant(trained["user/ids"])).numpy()
  new = refreshed.tables.lookup("user", tf.constant([NEW_USER], tf.int64)).numpy()
  for values in (v.numpy() for v in embeddings):
    match = [s for s in stored if np.array_equal(values[index], s[1:])]
    assert match, "a refreshed id embedding lost its trained rows"
    np.testing.assert_array_equal(values[new[0]], match[0][0])  # the OOV row


def test_added_interaction_is_visible_only_after_its_day(setup, refreshed):
  user, video = setup["user"], setup["video"]
  stale = os.path.join(setup["serving"], "1")
  candidates = [video, 3, 4]  # trained videos: the same inputs in both versions
  sampler = refreshed.sampler
  for day in (ADDED_DAY - 1, ADDED_DAY):
    assert not _has_edge(sampler, user, video, day)
    np.testing.assert_allclose(_rank(refreshed.version_dir, user, candidates, day)["score"],
                               _rank(stale, user, candidates, day)["score"], atol=1e-5)
  assert _has_edge(sampler, user, video, ADDED_DAY + 1)
  assert _has_edge(sampler, NEW_USER, video, ADDED_DAY + 1)
  after = _rank(refreshed.version_dir, user, candidates, ADDED_DAY + 1)["score"]
  assert not np.allclose(after, _rank(stale, user, candidates, ADDED_DAY + 1)["score"],
                         atol=1e-6)


def test_cold_start_user_is_encoded_and_unknown_ids_still_score(refreshed):
  version = refreshed.version_dir
  videos = [NEW_VIDEO, 1, 2]
  new = _rank(version, NEW_USER, videos, ADDED_DAY + 1)["score"]
  unknown = _rank(version, 987654, videos + [876543], ADDED_DAY + 1)["score"]
  assert np.all(np.isfinite(new)) and np.all(np.isfinite(unknown))
  assert not np.allclose(new, unknown[:3], atol=1e-6)


def test_server_swaps_to_the_refreshed_version_without_failed_requests(swap):
  assert not swap["errors"]
  assert swap["versions"][0] == 1 and swap["versions"][-1] == swap["version"]
  assert swap["listing"] == ["1", str(swap["version"])]


def test_refresh_pipeline_pushes_a_version_with_the_same_weights(setup, refreshed, tmp_path):
  """`e2e-grec run --refresh-from`: the TFX form of the refresh, no Trainer in it."""
  from e2e_grec.pipeline import run as pipeline_run  # pylint: disable=g-import-not-at-top

  config = CONFIG.replace(**{"pipeline.root": str(tmp_path / "root"),
                             "pipeline.serving_dir": str(tmp_path / "serving"),
                             "data.data_dir": setup["data"]})
  result = pipeline_run.run(config, out=open(os.devnull, "w"),
                            refresh_from=setup["model_dir"])
  assert {n.node_id: n.status for n in result.nodes} == {
      node: "ran" for node in ("TrainedModelImporter", "RefreshedGraphBuilder",
                               "StatisticsGen", "ImportSchemaGen", "ExampleValidator",
                               "AnomaliesGate", "RefreshExporter", "Pusher")}
  (version,) = os.listdir(result.serving_dir)
  pushed = os.path.join(result.serving_dir, version)
  assert result.executions["Pusher"].outputs["pushed_model"][0].custom_properties[
      "pushed_destination"].string_value == pushed
  user, video, stale = setup["user"], setup["video"], os.path.join(setup["serving"], "1")
  candidates = [video, 3, 4]
  # The trained weights: what the stale version scores where the refresh adds
  # nothing visible, and what the CLI refresh scores on the new graph.
  np.testing.assert_allclose(_rank(pushed, user, candidates, ADDED_DAY)["score"],
                             _rank(stale, user, candidates, ADDED_DAY)["score"], atol=1e-5)
  np.testing.assert_allclose(_rank(pushed, user, candidates, ADDED_DAY + 1)["score"],
                             _rank(refreshed.version_dir, user, candidates,
                                   ADDED_DAY + 1)["score"], atol=1e-5)
  with open(os.path.join(pushed, graph_refresh.REPORT_FILE)) as f:
    assert json.load(f)["new_nodes"] == refreshed.report["new_nodes"]


def test_refresh_pipeline_refuses_what_is_not_a_trained_run(tmp_path):
  from e2e_grec.pipeline import run as pipeline_run  # pylint: disable=g-import-not-at-top

  with pytest.raises(FileNotFoundError, match="neither a training run directory"):
    pipeline_run.trained_run_dir(str(tmp_path))


def _assert_refused(setup, tmp_path, fragment: str, data: str | None = None, **kwargs):
  out = tmp_path / MODEL
  shutil.copytree(os.path.join(setup["serving"], "1"), out / "1")
  with pytest.raises((graph_refresh.RefreshError, kuairand.DataError)) as error:
    graph_refresh.refresh_graph(kwargs.pop("model_dir", setup["model_dir"]),
                                data or setup["data"], str(out), CONFIG, **kwargs)
  assert fragment in str(error.value)
  assert os.listdir(out) == ["1"]  # the served version untouched, no staging left
  return str(error.value)


def _copy_data(setup, tmp_path) -> str:
  data = str(tmp_path / "data")
  shutil.copytree(setup["data"], data)
  return data


def test_empty_refresh_window_is_refused(setup, tmp_path):
  _assert_refused(setup, tmp_path, "refresh window is empty", through="2022-04-28")


def test_logs_not_matching_the_schema_are_refused(setup, tmp_path):
  data = _copy_data(setup, tmp_path)
  log = next(p for p in os.listdir(data) if p.startswith("log_standard"))
  with open(os.path.join(data, log)) as f:
    lines = f.read().splitlines()
  lines[0] = lines[0].replace("is_click", "clicked")
  with open(os.path.join(data, log), "w") as f:
    f.write("\n".join(lines) + "\n")
  _assert_refused(setup, tmp_path, log, data=data)


def test_side_tables_that_do_not_fit_the_model_are_refused(setup, tmp_path):
  data = _copy_data(setup, tmp_path)
  path = os.path.join(data, kuairand.USER_FEATURES)
  with open(path, newline="") as f:
    rows = list(csv.DictReader(f))
  for i, row in enumerate(rows):
    row["user_active_degree"] = f"level_{i}"
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  _assert_refused(setup, tmp_path, "user/categorical_sizes", data=data)


@pytest.mark.parametrize("change", ["fewer_users_in_tables", "other_embedding_dim"])
def test_a_model_whose_parts_do_not_fit_is_refused(setup, refreshed, tmp_path, change):
  """The weights are checked against the model's own tables and config (step 4)."""
  model_dir = str(tmp_path / "model")
  shutil.copytree(setup["model_dir"], model_dir)
  tables_path = os.path.join(model_dir, contracts.NODE_TABLES_FILE)
  if change == "fewer_users_in_tables":
    arrays = node_tables.load_arrays(tables_path)
    for key in ("user/ids", "user/dense", "user/categorical"):
      arrays[key] = arrays[key][:-5]
    node_tables.save_arrays(tables_path, arrays)
  else:
    path = os.path.join(model_dir, contracts.RUN_CONFIG_FILE)
    config_lib.load(path).replace(**{"model.embedding_dim": 6}).save(path)
  trained = graph_refresh.TrainedModel.load(model_dir)
  with pytest.raises(graph_refresh.RefreshError, match="do not fit"):
    graph_refresh.transplant(trained, trained.arrays, refreshed.sampler)
