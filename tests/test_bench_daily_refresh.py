"""The daily-refresh benchmark's crossover arithmetic and its README rendering."""
import e2e_grec  # noqa: F401

from e2e_grec.benchmarks import bench_daily_refresh as bench
from e2e_grec.benchmarks import report


def _day(mode: str, stream: str, step: str, examples: int, nodes: int | None,
         **phase_s: float) -> dict:
  phases = dict.fromkeys(bench.PHASES, 0.0) | phase_s
  return {"mode": mode, "stream": stream, "step": step, "examples": examples,
          "known_nodes": nodes, "history_examples": examples, "phase_s": phases,
          "total_s": sum(phases.values()),
          "next_day": {"examples": 1, "mean_gauc": 0.6, "mean_auc": 0.7}}


def _days(e2e_rate: float, fine_tune_rate: float) -> list[dict]:
  """Exact linear costs: 10 s fixed each, 1 ms per node re-embedded, 2 nodes per example."""
  days = []
  for stream, n in (("small", 1000), ("large", 100_000)):
    days.append(_day("e2e", stream, "d1", n, None, ranker_update=10 + e2e_rate * n))
    days.append(_day("two_stage", stream, "d1", n, 2 * n, ranker_update=10 + 1e-4 * n,
                     gnn_refresh=fine_tune_rate * n, embedding_precompute=1e-3 * 2 * n))
  return days


def test_crossover_in_nodes_per_day_example_when_e2e_costs_more_per_example():
  result = bench.crossover(_days(e2e_rate=3e-3, fine_tune_rate=1e-3))
  assert abs(result["two_stage_precompute_s_per_node"] - 1e-3) < 1e-9
  # two_stage - e2e = 1e-3 N + (1e-3 + 1e-4 - 3e-3) n: equal at N / n = 1.9.
  assert abs(result["nodes_per_day_example"] - 1.9) < 1e-6
  assert result["e2e_cheaper_days"] == {"small": "1/1", "large": "1/1"}


def test_no_crossover_needed_when_fine_tune_alone_costs_more_than_e2e():
  result = bench.crossover(_days(e2e_rate=1e-3, fine_tune_rate=2e-3))
  assert result["nodes_per_day_example"] < 0


def test_report_renders_the_crossover_sentence_from_the_json():
  days = _days(e2e_rate=3e-3, fine_tune_rate=1e-3)
  summary = {"config": {"warm_start_epochs": 2, "daily_update_epochs": 1,
                        "sampling.fanouts": [5], "batch_size": 1024, "cpu_count": 2},
             "streams": {"large": {"known_nodes_per_day_example": 2.0, "modes": {}}},
             "crossover": bench.crossover(days)}
  text = report._daily_refresh(summary)
  assert "more than 1.90 known users + videos per day example" in text
  assert "large 2.00" in text
