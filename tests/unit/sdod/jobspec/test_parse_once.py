"""The job spec has one typed life: a stage parses the request once and its hyperparameters
once, and no code outside `sdod/jobspec/` copies or edits a raw request dict."""

from __future__ import annotations

import ast
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sdod.demo.dataset import make_sample_data

REPO = Path(__file__).resolve().parents[4]
CHANNELS = ("train", "validation", "train_annotation", "validation_annotation")


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Counter[str]]:
    """Counts of request parses (`spec`) and hyperparameter parses (`hp`), wherever sdod
    calls them from; the task cache under `tmp_path`."""
    from sdod import hyperparameters
    from sdod.jobspec import parse

    monkeypatch.setenv("SDOD_CACHE_DIR", str(tmp_path / "cache"))
    counts: Counter[str] = Counter()
    real_parse, real_hp = parse._parse, hyperparameters.parse_hyperparameters

    def spec(*args: Any, **kwargs: Any) -> Any:
        counts["spec"] += 1
        return real_parse(*args, **kwargs)

    def hp(*args: Any, **kwargs: Any) -> Any:
        counts["hp"] += 1
        return real_hp(*args, **kwargs)

    monkeypatch.setattr(parse, "_parse", spec)
    for module in list(sys.modules.values()):  # `from ... import` made copies of the name
        if module.__name__.startswith("sdod") and vars(module).get("parse_hyperparameters") is (
            real_hp
        ):
            monkeypatch.setattr(module, "parse_hyperparameters", hp)
    yield counts


def _request(root: Path) -> dict[str, Any]:
    make_sample_data(root / "data", train=6, validation=3, num_classes=3, seed=4)
    return {
        "TrainingJobName": "parse-once",
        "HyperParameters": {"num_classes": "3", "num_training_samples": "6"},
        "InputDataConfig": [
            {"ChannelName": c, "DataSource": {"S3DataSource": {"S3Uri": str(root / "data" / c)}}}
            for c in CHANNELS
        ],
        "OutputDataConfig": {"S3OutputPath": str(root / "out")},
    }


def test_each_data_stage_parses_the_spec_once_and_its_hyperparameters_at_most_once(
    parses: Counter[str], tmp_path: Path
) -> None:
    """As the DAG runs them, each stage in its own task: the request arrives as a dict."""
    from sdod import stages

    work = str(tmp_path / "work")
    staged = stages.ingest(job_spec=_request(tmp_path), work_uri=work, run_id="r1")
    assert parses == {"spec": 1}
    assert staged.spec is not None
    parses.clear()
    checked = stages.check(job_spec=staged.spec)
    assert checked.passed
    assert parses == {"spec": 1, "hp": 1}  # the gate needs num_classes and label_width
    parses.clear()
    packed = stages.pack_job(
        job_spec=staged.spec, work_uri=work, quarantine_uri=checked.quarantine_uri
    )
    assert packed.records["train"] == 6
    assert parses == {"spec": 1}


def test_the_derived_requests_point_at_the_snapshot_and_the_packed_data(
    parses: Counter[str], tmp_path: Path
) -> None:
    from sdod import stages

    work = tmp_path / "work"
    request = _request(tmp_path)
    staged = stages.ingest(job_spec=request, work_uri=str(work), run_id="r1")
    assert staged.spec is not None
    sources = [c["DataSource"]["S3DataSource"]["S3Uri"] for c in staged.spec["InputDataConfig"]]
    assert sources == [f"{work / 'parse-once' / 'input' / c}/" for c in CHANNELS]
    assert request["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == str(
        tmp_path / "data" / "train"
    )  # the caller's request is not touched
    packed = stages.pack_job(job_spec=staged.spec, work_uri=str(work))
    derived = packed.train_spec
    assert [c["ChannelName"] for c in derived["InputDataConfig"]] == ["train", "validation"]
    assert derived["InputDataConfig"][0]["ContentType"] == "application/x-recordio"
    assert derived["CheckpointConfig"]["S3Uri"].startswith(str(work / "parse-once"))
    assert staged.spec.get("CheckpointConfig") is None  # a new request, not an edited one


# --- no raw request is copied or edited outside sdod/jobspec/ -------------------------

REQUEST_WORDS = ("raw", "spec", "request", "tuning", "definition")


def _taints(node: ast.expr, tainted: set[str]) -> bool:
    """Whether an expression is a raw request or a part of one: `x.raw`, `x.to_request()`,
    a deep copy of something named like a request, a tainted name, indexed or `.get`."""
    while True:
        if isinstance(node, ast.Subscript):
            node = node.value
        elif isinstance(node, ast.Call) and ast.unparse(node.func).endswith(".get"):
            node = node.func.value  # type: ignore[attr-defined]
        elif isinstance(node, ast.Call) and ast.unparse(node.func) in ("zip", "enumerate"):
            return any(_taints(a, tainted) for a in node.args)
        else:
            break
    if isinstance(node, ast.Attribute) and node.attr == "raw":
        return True
    if isinstance(node, ast.Call):
        return ast.unparse(node.func).endswith(".to_request") or bool(_request_copy(node))
    return isinstance(node, ast.Name) and node.id in tainted


def _request_copy(call: ast.Call) -> str | None:
    """The argument of a `deepcopy` call that copies something named like a request."""
    if "deepcopy" not in ast.unparse(call.func) or not call.args:
        return None
    argument = ast.unparse(call.args[0])
    return argument if any(word in argument.lower() for word in REQUEST_WORDS) else None


def _names(target: ast.expr) -> set[str]:
    """The names an assignment binds (`x`, `x, y`), not those it indexes (`x[k]`)."""
    if isinstance(target, ast.Name):
        return {target.id}
    if isinstance(target, ast.Tuple | ast.List):
        return {n for element in target.elts for n in _names(element)}
    return set()


def _tainted_names(scope: ast.AST) -> set[str]:
    """The names a function binds to a raw request or a part of one (until none is added:
    `ast.walk` is breadth-first, not in source order)."""
    tainted: set[str] = set()
    while True:
        before = len(tainted)
        for node in ast.walk(scope):
            if isinstance(node, ast.Assign) and _taints(node.value, tainted):
                tainted |= {n for t in node.targets for n in _names(t)}
            if isinstance(node, ast.For) and _taints(node.iter, tainted):
                tainted |= _names(node.target)
        if len(tainted) == before:
            return tainted


def request_edits(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) for each deep copy of a request and each item assignment or deletion
    on a dict that came from a raw request, function by function."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and (argument := _request_copy(node)):
            found.append((node.lineno, f"deepcopy({argument})"))
    scopes = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    for scope in scopes:
        tainted = _tainted_names(scope)
        for node in ast.walk(scope):
            targets = (
                node.targets if isinstance(node, ast.Assign | ast.Delete)
                else [node.target] if isinstance(node, ast.AugAssign) else []
            )  # fmt: skip
            for target in targets:
                if isinstance(target, ast.Subscript) and _taints(target.value, tainted):
                    found.append((target.lineno, f"{ast.unparse(target)} changed"))
    return found


def test_the_checker_finds_the_edits_it_is_meant_to_find() -> None:
    edited = ast.parse(
        "def f(spec, built):\n"
        "    staged = copy.deepcopy(spec.raw)\n"
        "    for raw in staged['InputDataConfig']:\n"
        "        raw['DataSource']['S3DataSource']['S3Uri'] = 'x'\n"
        "    spec.raw['Tags'] = []\n"
        "    tuning = copy.deepcopy(built['tuning'])\n"
        "    definition = tuning['TrainingJobDefinition']\n"
        "    definition['InputDataConfig'] = []\n"
        "    out = spec.to_request()\n"
        "    del out['CheckpointConfig']\n"
        "    summary = {}\n"
        "    summary['OutputUri'] = 'y'\n"  # not a request: fine
        "    state = copy.deepcopy(net.state_dict())\n"  # not a request: fine
        "    state['step'] = 1\n"
    )
    assert sorted(line for line, _ in request_edits(edited)) == [2, 4, 5, 6, 8, 10]


def test_no_raw_request_is_copied_or_edited_outside_the_jobspec_package() -> None:
    files = [
        p
        for folder in ("sdod", "plugins")
        for p in sorted((REPO / folder).rglob("*.py"))
        if "jobspec" not in p.relative_to(REPO).parts
    ]
    found = [
        f"{path.relative_to(REPO)}:{line}: {what}"
        for path in files
        for line, what in request_edits(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert not found, "raw requests edited (use TrainingJobSpec.with_...):\n" + "\n".join(found)
