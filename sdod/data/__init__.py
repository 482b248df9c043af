"""Annotation formats, the MXNet RecordIO codec, packing, datasets and sample data."""
