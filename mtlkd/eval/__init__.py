"""Evaluation: streaming dataset metrics, the Delta score and comparison tables against a baseline."""
