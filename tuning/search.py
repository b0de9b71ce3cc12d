"""Hyperparameter search over `e2e-grec train` runs: `e2e-grec tune`.

    e2e-grec tune --examples DIR --graph DIR --out DIR --trials 12 [--set key=value ...]

Optuna, not KerasTuner (nor TFX's Tuner component, which runs KerasTuner):
KerasTuner has trouble under legacy tf-keras (keras-tuner#1039), which TF-GNN
and TFRS require, and it tunes `model.fit`, while this trainer is a custom
GradNorm loop driven by a config. Optuna takes any objective: a trial is a set
of config overrides for one `e2e-grec train` run in its own process, and its
value is that run's mean GAUC on the eval window after the last epoch (the
model that would ship). Only the eval window ever guides a choice.

Prepare the examples and build the graph once (with every edge set: which ones
are sampled is a trial parameter) and pass them to every trial. In `--out`:

  study.sqlite3  the Optuna study; rerunning the same command resumes it,
                 without repeating finished trials; a trial that was
                 interrupted is retried with the same parameters, and its run
                 resumes from its checkpoints
  runs/<digest>/ one training run per distinct resolved config
  tensorboard/   the HParams dashboard (`tensorboard --logdir DIR/tensorboard`)
  summary.json   trials per state, the best trials, parameter importances

A new study first runs the shipped config (`--config` / `--set` as given), as
the reference the search has to beat. Trials report their per-epoch eval mean
GAUC, and Optuna's MedianPruner stops a trial whose epoch is below the median
of the earlier trials at that epoch.
"""
from __future__ import annotations

import argparse
import collections
import json
import logging
import os
from typing import Sequence

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from e2e_grec import config as config_lib
from e2e_grec.tuning import hparams, space as space_lib, training_run

STUDY_NAME = "e2e_grec"
STUDY_FILE = "study.sqlite3"
SUMMARY_FILE = "summary.json"
# Keys of metrics.json kept with each trial, beyond the headline metrics.
TRIAL_METRICS = (*training_run.HEADLINE_METRICS, "best_mean_gauc", "best_epoch")


class Objective:
  """One trial: draw parameters, train in a child process, return eval mean GAUC."""

  def __init__(self, examples: str, graph: str, out: str, space: space_lib.SearchSpace,
               config_path: str | None, base_overrides: Sequence[str]):
    self._examples, self._graph, self._out = examples, graph, out
    self._space, self._config_path = space, config_path
    self._base_overrides = list(base_overrides)

  def __call__(self, trial: optuna.Trial) -> float:
    params = self._space.suggest(trial)
    overrides = [*self._base_overrides,
                 *space_lib.override_strings(space_lib.to_overrides(params))]
    out = training_run.run_dir(os.path.join(self._out, "runs"), self._config_path, overrides)
    trial.set_user_attr("overrides", overrides)
    trial.set_user_attr("run_dir", out)

    def on_eval(epoch: int, mean_gauc: float) -> None:
      trial.report(mean_gauc, epoch)
      if trial.should_prune():
        raise optuna.TrialPruned(f"epoch {epoch} eval mean GAUC {mean_gauc:.4f} is below "
                                 "the median of earlier trials")

    try:
      metrics = training_run.run_training(self._examples, self._graph, out,
                                          config_path=self._config_path,
                                          overrides=overrides, on_eval=on_eval)
    except training_run.TrainingFailed as e:
      trial.set_user_attr("error", str(e))
      raise
    trial.set_user_attr("metrics", {k: metrics.get(k) for k in TRIAL_METRICS})
    trial.set_user_attr("epoch_mean_gauc", [h["mean_gauc"] for h in metrics["history"]])
    return metrics["mean_gauc"]


def open_study(out: str, seed: int, startup_trials: int) -> optuna.Study:
  """Creates the study in `out/study.sqlite3`, or loads it to resume."""
  os.makedirs(out, exist_ok=True)
  study = optuna.create_study(
      storage=f"sqlite:///{os.path.abspath(os.path.join(out, STUDY_FILE))}",
      study_name=STUDY_NAME, direction="maximize", load_if_exists=True,
      pruner=optuna.pruners.MedianPruner(n_startup_trials=3))
  # Seeded past the trials already run, so a resumed search does not redraw
  # its first random trials; multivariate TPE over groups of co-occurring
  # parameters handles the conditional fan-outs.
  study.sampler = optuna.samplers.TPESampler(
      n_startup_trials=startup_trials, multivariate=True, group=True,
      seed=seed + len(study.trials))
  return study


def retry_interrupted(study: optuna.Study) -> None:
  """Requeues trials whose search process was stopped, with the same parameters.

  A killed search leaves its trial RUNNING, a Ctrl-C leaves it FAILED without
  an `error` (training failures record one and are not retried). One search
  process per study is assumed: any RUNNING trial here is a dead one.
  """
  retried = {n for t in study.trials for n in RetryHeartbeatStaleTrialCallback.retry_history(t)}
  for trial in study.trials:
    if trial.state == TrialState.RUNNING:
      study.tell(trial.number, state=TrialState.FAIL)
    elif trial.state != TrialState.FAIL or "error" in trial.user_attrs:
      continue
    if trial.number not in retried:
      logging.info("tune: retrying interrupted trial %d", trial.number)
      RetryHeartbeatStaleTrialCallback()(study, trial)


def _finished(trial: FrozenTrial) -> bool:
  return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
      trial.state == TrialState.FAIL and "error" in trial.user_attrs)


def _importances(study: optuna.Study) -> dict[str, float]:
  """fANOVA importances over the parameters every complete trial has.

  fANOVA (random forests) rather than Optuna's default PED-ANOVA, which needs
  many trials; empty until two trials are complete, or while they do not vary.
  """
  if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < 2:
    return {}
  try:
    importances = optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
  except RuntimeError:  # "Encountered zero total variance in all trees."
    return {}
  return {name: float(value) for name, value in importances.items()}


def summarise(study: optuna.Study, top: int = 5) -> dict:
  """Trials per state, the `top` best complete trials, parameter importances."""
  complete = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
                    key=lambda t: t.value, reverse=True)

  def entry(t: FrozenTrial) -> dict:
    return {"number": t.number, "mean_gauc": t.value, "params": t.params,
            "overrides": t.user_attrs.get("overrides"), **{
                k: t.user_attrs.get(k) for k in ("metrics", "epoch_mean_gauc", "run_dir")}}

  baseline = [t for t in complete if t.user_attrs.get("baseline")]
  return {
      "objective": "eval-window mean GAUC after the last epoch (maximised)",
      "trials": dict(collections.Counter(t.state.name.lower() for t in study.trials)),
      "baseline": entry(baseline[0]) if baseline else None,
      "best": [entry(t) for t in complete[:top]],
      "param_importances": _importances(study),
  }


def search(examples: str, graph: str, out: str, *, trials: int,
           space: space_lib.SearchSpace = space_lib.SearchSpace(),
           config_path: str | None = None, overrides: Sequence[str] = (), seed: int = 0,
           summary_path: str | None = None) -> dict:
  """Runs (or resumes) the study until `trials` trials have finished; returns the summary.

  Every trial starts from `config_path` + `overrides`; that config itself is
  the first trial of a new study if it lies in `space`. The summary is
  rewritten after every trial to `out/summary.json` and, if given, `summary_path`.
  """
  shipped = space_lib.params_of(config_lib.load(config_path, overrides))
  study = open_study(out, seed, startup_trials=max(2, min(10, trials // 2)))
  if not study.trials:
    if space.contains(shipped):
      study.enqueue_trial(shipped, user_attrs={"baseline": True})
    else:
      logging.warning("tune: the starting config %s is outside the search space; "
                      "it is not run as a trial", shipped)
  retry_interrupted(study)
  remaining = trials - sum(map(_finished, study.trials))
  paths = [os.path.join(out, SUMMARY_FILE)] + ([summary_path] if summary_path else [])

  def write_summary(study: optuna.Study, _: FrozenTrial) -> None:
    summary = summarise(study)
    for path in paths:
      with open(path, "w") as f:
        json.dump(summary, f, indent=2)

  if remaining > 0:
    logging.info("tune: %d of %d trials to run in %s", remaining, trials, out)
    log = hparams.HParamsLog(os.path.join(out, "tensorboard"), space.distributions(),
                             TRIAL_METRICS[:-1])
    study.optimize(Objective(examples, graph, out, space, config_path, overrides),
                   n_trials=remaining, catch=(training_run.TrainingFailed,),
                   callbacks=[log, write_summary])
  write_summary(study, None)
  return summarise(study)


def command(args: argparse.Namespace, config: config_lib.Config) -> int:
  """`e2e-grec tune`: args examples, graph, out, trials, max_epochs, seed, summary.

  `config` is the resolved `--config` + `--set`, which every trial starts from.
  """
  del config  # Trials resolve --config and --set themselves, in their own process.
  summary = search(args.examples, args.graph, args.out, trials=args.trials,
                   space=space_lib.SearchSpace(max_epochs=args.max_epochs),
                   config_path=args.config, overrides=args.set, seed=args.seed,
                   summary_path=args.summary)
  print(json.dumps({k: summary[k] for k in ("trials", "best")}, indent=2))
  return 0
