"""Evaluator: compares a trained model with the baseline and the last blessed model."""
