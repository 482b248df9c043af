"""Annotation checks with Great Expectations: a quality gate before any GPU time is spent."""
