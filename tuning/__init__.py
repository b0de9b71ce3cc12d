"""Hyperparameter search over `e2e-grec train` runs (Optuna + TensorBoard HParams)."""
