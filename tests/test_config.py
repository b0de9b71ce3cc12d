"""Config validation: every bad value is one ConfigError that names its key, file or line."""
import pytest

from e2e_grec import config as config_lib
from e2e_grec import contracts

# The bad configs probed in issue 14, each with the key its error must name.
BAD_OVERRIDES = [
    ("train.batch_size=0", "train.batch_size: must be >= 1"),
    ("train.batch_size=-1", "train.batch_size: must be >= 1"),
    ("train.epochs=-3", "train.epochs: must be >= 1"),
    ("train.learning_rate=-1", "train.learning_rate: must be > 0"),
    ("train.learning_rate=0", "train.learning_rate: must be > 0"),
    ("train.log_every_steps=0", "train.log_every_steps: must be >= 1"),
    ("train.checkpoint_every_steps=0", "train.checkpoint_every_steps: must be >= 1"),
    ("sampling.fanouts=[]", "sampling.fanouts: must not be empty"),
    ("sampling.fanouts=[10, -5]", r"sampling.fanouts\[1\]: must be >= 1"),
    ("model.gnn_layers=0", "model.gnn_layers: must be >= 1"),
    ("model.gnn_layers=3", "sampling.fanouts: one fan-out per GNN round.*model.gnn_layers=1"),
    ("data.train_start=2022-13-01", "data.train_start: '2022-13-01' is not a valid"),
    ("data.eval_start=2022-05-01", "splits must satisfy"),
    ("model.gnn_dropout=1.5", "model.gnn_dropout: must be >= 0 and <= 0.99"),
    ("serving.rest_port=70000", "serving.rest_port"),
    ("train.loss_weights={click: -1}", "train.loss_weights.click: must be >= 0"),
    ("eval.baseline_mode=best", "eval.baseline_mode: 'best' is not one of"),
    ("train.epochs=[", "override 'train.epochs=\\[': the value is not valid YAML"),
]


@pytest.mark.parametrize("override,message", BAD_OVERRIDES)
def test_bad_values_name_their_key(override, message):
  with pytest.raises(config_lib.ConfigError, match=message) as raised:
    config_lib.load(None, [override])
  assert "\n" not in str(raised.value)  # one line for the CLI


def test_defaults_and_consistent_overrides_are_valid():
  assert config_lib.load() == config_lib.Config()
  config = config_lib.load(None, ["sampling.fanouts=[5]", "model.gnn_layers=1",
                                  "data.train_start=2022-04-26"])
  assert config.sampling.fanouts == (5,) and config.data.train_start == "2022-04-26"


def test_malformed_yaml_names_the_file_and_line(tmp_path):
  path = tmp_path / "bad.yaml"
  path.write_text("train:\n  epochs: 2\n   batch_size: [1\n")
  with pytest.raises(config_lib.ConfigError, match=rf"{path}:3:\d+: invalid YAML"):
    config_lib.load(str(path))
  path.write_text("- just\n- a list\n")
  with pytest.raises(config_lib.ConfigError, match=rf"{path}: expected a mapping"):
    config_lib.load(str(path))
  with pytest.raises(config_lib.ConfigError, match="cannot read the config file"):
    config_lib.load(str(tmp_path / "missing.yaml"))


def test_a_bad_date_in_a_file_names_the_key(tmp_path):
  path = tmp_path / "dates.yaml"
  path.write_text("data:\n  train_start: 2022-13-01\n")
  with pytest.raises(config_lib.ConfigError, match="data.train_start"):
    config_lib.load(str(path))
  path.write_text("data:\n  train_start: 2022-04-26\n")
  assert config_lib.load(str(path)).data.train_start == "2022-04-26"


def test_exec_property_round_trip_and_errors():
  config = config_lib.load(None, ["train.epochs=3"])
  assert contracts.decode_config(contracts.encode_config(config)) == config
  with pytest.raises(config_lib.ConfigError, match=contracts.CONFIG_KEY):
    contracts.decode_config("train: [")
  with pytest.raises(config_lib.ConfigError, match="train.epochs"):
    contracts.decode_config("train:\n  epochs: 0\n")


def test_server_settings_are_not_part_of_the_trainer_config():
  from e2e_grec.pipeline import pipeline as pipeline_lib  # the TFX DAG's section lists

  base = config_lib.Config()
  moved = base.replace(**{"serving.grpc_port": 9000, "serving.host": "0.0.0.0",
                          "serving.poll_seconds": 5.0})
  trainer = lambda c: pipeline_lib.sections(c, pipeline_lib.TRAINER_SECTIONS)
  assert trainer(moved) == trainer(base)
  reweighted = base.replace(**{"export.task_weights": {"click": 3.0}})
  assert trainer(reweighted) != trainer(base)
