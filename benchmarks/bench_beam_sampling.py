"""Beam-sampled subgraphs (`sampling.where=beam`) against in-trainer sampling, per example.

    python -m benchmarks.bench_beam_sampling [--data DIR] [--graph DIR --examples DIR]

On the same prepared examples and graph (both splits, the shipped sampling
config), three costs per example:

1. `beam`: `graph/beam_sampling.sample_subgraphs` on the Beam DirectRunner
   (in process), wall time over every example of both splits, and the bytes
   it writes (examples plus their subgraphs);
2. `trainer_sampling`: what the in-trainer path spends instead: the
   `SubgraphSampler` over the same examples inside `tf.data` at the trainer's
   batch size (the best of `--rounds`), plus loading the sampling index once;
3. `trainer_reading_presampled`: what the trainer spends with `where=beam`:
   reading and parsing the pre-sampled records into the same batches.

Writes benchmarks/results/bench_beam_sampling.json.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time

import e2e_grec  # noqa: F401  (legacy Keras before TensorFlow)
import tensorflow as tf

from benchmarks import inputs
from e2e_grec import config as config_lib
from e2e_grec import contracts
from e2e_grec.graph import beam_sampling
from e2e_grec.training import inputs as training_inputs

RESULT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                      "bench_beam_sampling.json")


def _bytes(path: str) -> int:
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def _best_rate(make_dataset, examples: int, rounds: int) -> float:
  """Examples per second of the fastest full pass over `make_dataset()`."""
  best = float("inf")
  for _ in range(rounds):
    started = time.perf_counter()
    for _ in make_dataset():
      pass
    best = min(best, time.perf_counter() - started)
  return examples / best


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  inputs.add_arguments(parser, "e2e_grec_bench_beam_sampling")
  parser.add_argument("--rounds", type=int, default=2, help="Passes of each tf.data timing.")
  parser.add_argument("--out", default=RESULT)
  args = parser.parse_args()
  logging.basicConfig(level=logging.INFO)
  config = config_lib.Config()
  examples_dir, graph_dir = inputs.prepared(args, config)
  subgraphs_dir = os.path.join(args.work, "subgraphs")

  started = time.perf_counter()
  counts = beam_sampling.sample_subgraphs(config, examples_dir, graph_dir, subgraphs_dir)
  beam_s = time.perf_counter() - started
  examples = sum(counts.values())

  started = time.perf_counter()
  sampler = training_inputs.make_sampler(config, graph_dir,
                                         training_inputs.load_tables(examples_dir))
  index_load_s = time.perf_counter() - started
  batch = config.train.batch_size
  columns = {split: training_inputs.load_split(examples_dir, split) for split in contracts.SPLITS}

  def sampled():
    for split in contracts.SPLITS:
      seed = beam_sampling.split_seed(config, split)
      yield from (tf.data.Dataset.from_tensor_slices(columns[split]).batch(batch)
                  .map(lambda b, seed=seed: sampler(b[contracts.USER_ID], b[contracts.VIDEO_ID],
                                                    b[contracts.DAY], seed=seed),
                       num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE))

  presampled = training_inputs.PresampledSubgraphs(subgraphs_dir)

  def read():
    for split in contracts.SPLITS:
      yield from presampled.dataset(split, batch, None).prefetch(tf.data.AUTOTUNE)

  trainer_rate = _best_rate(sampled, examples, args.rounds)
  reading_rate = _best_rate(read, examples, args.rounds)
  result = {
      "command": "python -m benchmarks.bench_beam_sampling",
      "data": os.path.abspath(examples_dir),
      "examples": examples, "examples_per_split": counts,
      "sampling": {"fanouts": list(config.sampling.fanouts),
                   "edge_sets": list(config.sampling.edge_sets), "batch_size": batch},
      "beam": {"runner": "DirectRunner (in process)", "wall_s": beam_s,
               "ms_per_example": 1e3 * beam_s / examples,
               "output_bytes": _bytes(subgraphs_dir)},
      "trainer_sampling": {"examples_per_s": trainer_rate,
                           "ms_per_example": 1e3 / trainer_rate,
                           "index_load_s": index_load_s,
                           "index_bytes": os.path.getsize(
                               os.path.join(graph_dir, contracts.SAMPLING_INDEX_FILE))},
      "trainer_reading_presampled": {"examples_per_s": reading_rate,
                                     "ms_per_example": 1e3 / reading_rate},
      "beam_over_trainer_sampling": trainer_rate * beam_s / examples,
      "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                  "load_average_1m": os.getloadavg()[0]},
  }
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=2)
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  main()
