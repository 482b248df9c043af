"""Inference: the predictor and the SageMaker-compatible HTTP endpoint."""
