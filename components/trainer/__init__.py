"""Trainer: TFX's Trainer with a `graph` input, training through `run_fn`."""
