"""Evaluation: grounding metrics, E.T. Bench metrics, the inference runner and reports."""
