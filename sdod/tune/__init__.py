"""Hyperparameter tuning jobs (SageMaker automatic model tuning) over sdod training jobs."""
