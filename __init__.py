"""E2E-GRec: end-to-end training of a GNN with a multi-task ranker on TensorFlow.

Importing any part of the package forces legacy Keras (tf-keras), which TF-GNN
and TFRS require, before TensorFlow can be imported with Keras 3.
"""
import os
import sys

if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
  raise ImportError(
      "e2e_grec must be imported before tensorflow (or run with "
      "TF_USE_LEGACY_KERAS=1): TF-GNN and TFRS need legacy tf.keras.")
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
