"""TFX custom components of E2E-GRec: each `component.py` declares the interface
(inputs, outputs, execution properties), `executor.py` does the work."""
