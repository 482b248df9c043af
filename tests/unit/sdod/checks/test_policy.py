"""The gate's policy is validated in one place, and the DAG form takes its bounds from it
(the form once allowed max_bad_fraction 1, which the gate refused)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sdod.checks.policy import DEFAULT, CheckPolicy
from sdod.errors import UserError

REPO = Path(__file__).resolve().parents[4]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("policy", "drop", "--policy must be one of fail, quarantine"),
        ("max_bad_fraction", 1.0, r"max_bad_fraction must be in \[0, 1\)"),
        ("max_bad_fraction", -0.1, r"max_bad_fraction must be in \[0, 1\)"),
        ("grayscale", "keep", "--grayscale must be one of convert, reject"),
        ("max_class_ratio", 0.5, "max_class_ratio must be >= 1"),
    ],
)
def test_bad_values_are_refused_with_the_rule(field: str, value: object, message: str) -> None:
    with pytest.raises(UserError, match=message):
        CheckPolicy(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(("value", "ok"), [(0.0, True), (0.99, True), (1.0, False), (1.5, False)])
def test_the_dag_form_has_the_gates_bounds(value: float, ok: bool) -> None:
    from airflow.sdk import Param

    sys.path.insert(0, str(REPO / "plugins"))
    from sdod_pipeline import pipeline_params

    form = pipeline_params(job_name="j", data_uri="d", output_uri="o", max_runtime_seconds=60)
    assert form["max_bad_fraction"].value == DEFAULT.max_bad_fraction
    schema = {k: v for k, v in form["max_bad_fraction"].schema.items()}
    param = Param(value, **schema)
    if ok:
        assert param.resolve() == value
        CheckPolicy(max_bad_fraction=value)  # and the gate takes it too
    else:
        with pytest.raises(Exception, match=r"exclusiveMaximum|maximum|less than"):
            param.resolve()
