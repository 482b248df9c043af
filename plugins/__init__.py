"""Airflow operators for sdod (the training operator lands with issue 8)."""
