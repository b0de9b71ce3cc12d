"""The `e2e-grec` command line: the by-hand path to serving, and how it fails.

prepare -> build-graph -> train -> export -> serve -> score on tiny synthetic
data, each step through `cli.main` as a user types it (serve in its own process,
as it runs until stopped); then the failure modes: one line, a non-zero exit,
the traceback in the log file.
"""
import glob
import os
import socket
import subprocess
import sys
import time

import e2e_grec  # noqa: F401  (legacy Keras before TensorFlow)
import pandas as pd
import pytest

from e2e_grec import cli
from test_pipeline import TINY  # the pipeline test's tiny data and model

SETS = [f"--set={override}" for override in TINY]


@pytest.fixture(autouse=True)
def log_dir(tmp_path, monkeypatch):
  logs = tmp_path / "logs"
  monkeypatch.setenv(cli.LOG_DIR_ENV, str(logs))
  return logs


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _score_until_served(argv: list[str], capsys, seconds: float = 120) -> str:
  """Runs `score` until the server has loaded the model; returns its stdout."""
  deadline = time.time() + seconds
  while True:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    if code == 0:
      return out
    if time.time() > deadline:
      raise AssertionError(f"score kept failing: {err}")
    time.sleep(2)


def test_by_hand_from_logs_to_a_served_ranking(tmp_path, capsys):
  examples, graph = str(tmp_path / "examples"), str(tmp_path / "graph")
  run, serving = str(tmp_path / "run"), str(tmp_path / "serving")
  assert cli.main(["prepare", "--out", examples, *SETS]) == 0
  assert cli.main(["build-graph", "--examples", examples, "--out", graph, *SETS,
                   "--", "--runner=DirectRunner"]) == 0
  assert cli.main(["train", "--examples", examples, "--graph", graph, "--out", run,
                   *SETS]) == 0
  assert cli.main(["export", "--model", run, "--examples", examples, "--graph", graph,
                   "--out", serving]) == 0
  (version,) = os.listdir(os.path.join(serving, "e2e_grec"))
  assert version.isdigit()
  assert os.path.exists(os.path.join(serving, "e2e_grec", version, "saved_model.pb"))
  capsys.readouterr()

  (log_file,) = glob.glob(os.path.join(examples, "raw", "log_standard_*.csv"))
  log = pd.read_csv(log_file, nrows=3)
  user, candidates = int(log["user_id"][0]), ",".join(map(str, log["video_id"]))
  port, rest_port = _free_port(), _free_port()
  server = subprocess.Popen(
      [sys.executable, "-m", "e2e_grec.cli", "serve", "--models", serving,
       "--host", "127.0.0.1", "--port", str(port), "--rest-port", str(rest_port)],
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    out = _score_until_served(
        ["score", "--user", str(user), "--candidates", candidates, "--host", "127.0.0.1",
         "--port", str(port), "--model-name", "e2e_grec", "--timeout", "30"], capsys)
  finally:
    server.terminate()
    server.wait(timeout=60)
  assert f"version {version}" in out
  for video in log["video_id"]:
    assert str(video) in out


def _one_line_failure(argv, capsys, log_dir) -> str:
  code = cli.main(argv)
  _, err = capsys.readouterr()
  assert code == 1, err
  (line,) = err.strip().splitlines()
  assert "Traceback" not in err
  (log_file,) = glob.glob(str(log_dir / f"{argv[0]}-*.log"))
  assert log_file in line
  with open(log_file) as f:
    assert "Traceback" in f.read()
  return line


def test_bad_config_key_is_one_line_naming_the_key(capsys, log_dir, tmp_path):
  line = _one_line_failure(["generate", "--out", str(tmp_path), "--set", "train.epoch=3"],
                           capsys, log_dir)
  assert line.startswith("e2e-grec generate: error: unknown config key(s) train.epoch")


def test_missing_data_is_one_line_naming_the_directory(capsys, log_dir, tmp_path):
  missing = str(tmp_path / "nowhere")
  line = _one_line_failure(["prepare", "--data", missing, "--out", str(tmp_path / "out")],
                           capsys, log_dir)
  assert missing in line


def test_export_of_a_directory_that_train_did_not_write(capsys, log_dir, tmp_path):
  line = _one_line_failure(["export", "--model", str(tmp_path), "--examples", str(tmp_path),
                            "--out", str(tmp_path / "serving")], capsys, log_dir)
  assert "--out of `train`" in line


@pytest.mark.parametrize("argv, message", [
    (["train", "--examples", "e", "--out", "o", "--epochs", "3"],
     "unrecognized arguments: --epochs 3"),
    (["generate", "--out", "o", "--", "--runner=DirectRunner"],
     "generate takes no arguments after `--`"),
    (["build-graph", "--examples", "e", "--out", "o", "--runner=DirectRunner"],
     "unrecognized arguments: --runner=DirectRunner"),
    (["compile-kubeflow", "--target", "argo"], "invalid choice: 'argo'"),
])
def test_unknown_flags_are_rejected_with_a_message(argv, message, capsys):
  with pytest.raises(SystemExit) as exit_:
    cli.main(argv)
  assert exit_.value.code == 2
  assert message in capsys.readouterr().err


def test_version(capsys):
  with pytest.raises(SystemExit) as exit_:
    cli.main(["--version"])
  assert exit_.value.code == 0
  assert capsys.readouterr().out.strip() == f"e2e-grec {e2e_grec.__version__}"


def test_flags_that_stand_for_config_keys_override_set(monkeypatch):
  seen = {}
  monkeypatch.setitem(cli.COMMANDS, "serve", cli.Command(
      "tests_fake:serve", "", cli.COMMANDS["serve"].add_arguments))
  fake = type(sys)("tests_fake")
  fake.serve = lambda args, config: seen.update(args=args, config=config) or 0
  monkeypatch.setitem(sys.modules, "tests_fake", fake)
  assert cli.main(["serve", "--set", "serving.grpc_port=1", "--port", "9000", "--host",
                   "0.0.0.0", "--models", "/models"]) == 0
  serving = seen["config"].serving
  assert (serving.grpc_port, serving.host, serving.rest_port) == (9000, "0.0.0.0", 8501)
  assert seen["args"].model_dir == "/models"
