"""The demo's sample data: synthetic scenes with real detection structure (`scenes`) and
the writer of a dataset in SageMaker's layouts (`dataset`, the `make-sample-data` CLI)."""
