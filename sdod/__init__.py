"""sdod: the SageMaker built-in Object Detection algorithm (SSD), on PyTorch, for Airflow 3."""

__version__ = "0.1.0"
