"""Graph refresh components: a trained model's graph rebuilt from newer logs, no training."""
