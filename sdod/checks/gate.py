"""Run the annotation suite, apply the policy, write the report.

Policy `fail` (default): any error-rule failure stops the run. Policy `quarantine`: images
named by error rules are removed (listed with their reasons) and the run continues while
the removed fraction stays at or below `max_bad_fraction`; dataset-level failures (a class
missing from train, an empty channel) cannot be quarantined and still stop it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sdod.checks.policy import DEFAULT, CheckPolicy
from sdod.checks.suite import RULES, SuiteParams, expectations
from sdod.checks.tables import box_table, decode_all, image_table
from sdod.data.sample import SampleSet
from sdod.storage import atomic_write_json


@dataclass
class RuleResult:
    rule: str
    severity: str
    success: bool
    count: int
    description: str
    fix: str
    examples: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class CheckReport:
    passed: bool
    policy: str
    images: dict[str, int]
    boxes: dict[str, int]
    rules: list[RuleResult]
    quarantined: list[dict[str, Any]]
    bad_fraction: float
    class_counts: dict[str, dict[str, int]]
    seconds: float
    report_file: str | None = None
    data_docs: str | None = None

    def failed(self, severity: str = "error") -> list[RuleResult]:
        return [r for r in self.rules if not r.success and r.severity == severity]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        lines = [
            f"annotation check {'PASSED' if self.passed else 'FAILED'} (policy {self.policy}): "
            + ", ".join(
                f"{c} {n} images / {self.boxes.get(c, 0)} boxes" for c, n in self.images.items()
            )
        ]
        for r in self.failed("error") + self.failed("warning"):
            where = ", ".join(
                sorted({Path(str(e.get("file", ""))).name for e in r.examples if e.get("file")})[:3]
            )
            if not where and r.examples:  # a dataset-level rule: show what was observed
                where = ", ".join(f"{k}={v}" for k, v in r.examples[0].items())
            example = f" e.g. {where}" if where else ""
            lines.append(
                f"  {r.severity} {r.rule}: {r.count} failing ({r.description}){example} -> {r.fix}"
            )
        if self.quarantined:
            lines.append(f"  quarantined {len(self.quarantined)} images ({self.bad_fraction:.1%})")
        return "\n".join(lines)


def _gx_context(report_dir: Path | None, gx_project: Path | None) -> Any:
    """An ephemeral context (default), or a file context kept in `gx_project`: its suites,
    validation results and Data Docs history stay there across runs."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    if gx_project is not None:
        gx_project.mkdir(parents=True, exist_ok=True)
        context: Any = gx.get_context(mode="file", project_root_dir=str(gx_project))
    else:
        context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    if "sdod_checks" in context.get_site_names():  # a kept context: point it at this report
        context.delete_data_docs_site("sdod_checks")
    if report_dir is not None:
        store = {
            "class_name": "TupleFilesystemStoreBackend",
            "base_directory": str(report_dir / "data_docs"),
        }
        index = {"class_name": "DefaultSiteIndexBuilder"}
        site: Any = {
            "class_name": "SiteBuilder",
            "site_index_builder": index,
            "store_backend": store,
        }
        context.add_data_docs_site(site_name="sdod_checks", site_config=site)
    return context


def _validate(context: Any, table: str, frame: Any, suite_items: list[Any]) -> Any:
    import great_expectations as gx

    asset = context.data_sources.add_or_update_pandas("sdod").add_dataframe_asset(table)
    batch = asset.add_batch_definition_whole_dataframe("all")
    # add_or_update: a file context keeps the previous run's suite and definition
    suite = context.suites.add_or_update(
        gx.ExpectationSuite(name=f"sdod_{table}", expectations=suite_items)
    )
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=f"sdod_{table}", data=batch, suite=suite)
    )
    fmt = {"result_format": "COMPLETE", "unexpected_index_column_names": ["key", "file"]}
    return definition.run(batch_parameters={"dataframe": frame}, result_format=fmt)


def _collect(
    results: list[Any], max_examples: int
) -> tuple[dict[str, RuleResult], dict[str, set[str]]]:
    rules: dict[str, RuleResult] = {}
    offenders: dict[str, set[str]] = {}
    for res in results:
        meta = res.expectation_config.meta
        fresh = RuleResult(
            meta["rule"], meta["severity"], True, 0, meta["description"], meta["fix"]
        )
        rule = rules.setdefault(meta["rule"], fresh)
        if res.success:
            continue
        rule.success = False
        rows = res.result.get("unexpected_index_list") or []
        rule.count += int(res.result.get("unexpected_count") or len(rows) or 1)
        for row in rows:
            offenders.setdefault(str(row["key"]), set()).add(rule.rule)
        if not rows:
            observed = res.result.get("observed_value") or res.result.get("details")
            rule.examples = rule.examples or [{"observed": str(observed)}]
        rule.examples.extend(
            {k: _plain(v) for k, v in row.items()}
            for row in rows[: max_examples - len(rule.examples)]
        )
    return rules, offenders


def _reader_problems(
    channels: dict[str, SampleSet], rules: dict[str, RuleResult], max_examples: int
) -> list[dict[str, Any]]:
    """Files a non-strict reader skipped (unpaired, invalid, conflicting names) as rule
    results; they are already out of the tables, so `quarantine` has dropped them."""
    for rule_id in ("annotation_pairing", "annotation_valid", "category_names_agree"):
        rule = RULES[rule_id]
        rules.setdefault(
            rule_id, RuleResult(rule_id, rule.severity, True, 0, rule.description, rule.fix)
        )
    skipped = []
    for channel, data in channels.items():
        for problem in data.problems:
            result = rules.get(problem.rule, rules["annotation_valid"])
            result.success = False
            result.count += 1
            if len(result.examples) < max_examples:
                result.examples.append({"file": problem.file, "message": problem.message})
            skipped.append(
                {"key": None, "channel": channel, "file": problem.file, "reasons": [result.rule]}
            )
    return skipped


def _class_balance(box_frame: Any, max_ratio: float) -> RuleResult:
    """A warning when train's classes are far out of balance (most vs rarest present class)."""
    rule = RULES["class_balance"]
    result = RuleResult(rule.id, rule.severity, True, 0, rule.description, rule.fix)
    counts = box_frame.loc[box_frame["channel"] == "train", "class_id"].value_counts()
    if len(counts) >= 2:
        most, rarest = int(counts.idxmax()), int(counts.idxmin())
        ratio = float(counts.max()) / float(counts.min())
        if ratio > max_ratio:
            result.success, result.count = False, 1
            result.examples = [
                {
                    "channel": "train",
                    "most_frequent": {"class_id": most, "boxes": int(counts.max())},
                    "rarest": {"class_id": rarest, "boxes": int(counts.min())},
                    "ratio": round(ratio, 2),
                    "max_class_ratio": max_ratio,
                }
            ]
    return result


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def run_checks(
    channels: dict[str, SampleSet],
    *,
    num_classes: int,
    label_width: int = 350,
    policy: str = DEFAULT.policy,
    max_bad_fraction: float = DEFAULT.max_bad_fraction,
    decode: bool = True,
    workers: int = 2,
    tolerance_px: float = 2.0,
    min_box_px: float = 2.0,
    report_dir: str | Path | None = None,
    max_examples: int = 10,
    grayscale: str = DEFAULT.grayscale,
    max_class_ratio: float = DEFAULT.max_class_ratio,
    gx_project: str | Path | None = None,
) -> CheckReport:
    """Validate the channels' annotations (and images, unless `decode=False`).

    `grayscale`: `convert` (a non-RGB image is a warning; training converts it) or `reject`
    (an error: the gate fails, or quarantines the image). `max_class_ratio`: the class
    balance warning fires when train's most frequent class has more than this many times
    the boxes of its rarest. `gx_project`: keep a Great Expectations file context there
    (suites, validation results, Data Docs in its `uncommitted/data_docs/local_site`)."""
    CheckPolicy(policy, max_bad_fraction, grayscale, max_class_ratio)  # refuses bad values
    start = time.perf_counter()
    image_frame, box_frame = _tables(channels, decode, workers)
    params = SuiteParams(num_classes, label_width, tolerance_px, min_box_px, tuple(channels),
                         _train_classes(box_frame), decode, grayscale)  # fmt: skip
    out = Path(report_dir) if report_dir else None
    context = _gx_context(out, Path(gx_project) if gx_project else None)
    rules, offenders, skipped = _rule_results(
        context, params, channels, (image_frame, box_frame), max_class_ratio, max_examples
    )
    passed, fraction, quarantined = _verdict(
        rules, offenders, skipped, image_frame, policy, max_bad_fraction
    )
    report = CheckReport(
        passed=passed,
        policy=policy,
        images={c: len(d) for c, d in channels.items()},
        boxes={c: d.num_boxes for c, d in channels.items()},
        rules=list(rules.values()),
        quarantined=quarantined,
        bad_fraction=fraction,
        class_counts=_class_counts(box_frame),
        seconds=round(time.perf_counter() - start, 3),
    )
    _publish(report, context, out, kept=gx_project is not None)
    return report


def _train_classes(box_frame: Any) -> tuple[int, ...]:
    """The class ids of train's boxes, each once, ascending."""
    train_ids = box_frame.loc[box_frame["channel"] == "train", "class_id"].tolist()
    return tuple(sorted(set(train_ids)))


def _rule_results(
    context: Any,
    params: SuiteParams,
    channels: dict[str, SampleSet],
    frames: tuple[Any, Any],
    max_class_ratio: float,
    max_examples: int,
) -> tuple[dict[str, RuleResult], dict[str, set[str]], list[dict[str, Any]]]:
    """Every rule's result (the suite on the image and box tables, the readers' skipped
    files, train's missing classes and its balance), the images each error rule names, and
    the files the readers skipped."""
    suites = expectations(params)
    tables = (("images", frames[0]), ("boxes", frames[1]))
    results = [r for t, f in tables for r in _validate(context, t, f, suites[t]).results]
    rules, offenders = _collect(results, max_examples)
    skipped = _reader_problems(channels, rules, max_examples)
    _name_missing_classes(rules, set(range(params.num_classes)) - set(params.train_classes))
    rules["class_balance"] = _class_balance(frames[1], max_class_ratio)
    return rules, offenders, skipped


def _class_counts(box_frame: Any) -> dict[str, dict[str, int]]:
    """Boxes per class id in each channel."""
    return {
        c: {str(k): int(v) for k, v in g["class_id"].value_counts().sort_index().items()}
        for c, g in box_frame.groupby("channel")
    }


def _name_missing_classes(rules: dict[str, RuleResult], missing: set[int]) -> None:
    """train_has_every_class's example: the class ids train lacks."""
    if missing and "train_has_every_class" in rules:
        rules["train_has_every_class"].examples = [{"missing_classes": sorted(missing)}]
        rules["train_has_every_class"].count = len(missing)


def _tables(channels: dict[str, SampleSet], decode: bool, workers: int) -> tuple[Any, Any]:
    """The image and box tables of every channel (images decoded unless `decode=False`)."""
    import pandas as pd

    images, boxes = [], []
    for name, data in channels.items():
        facts = decode_all([s.image for s in data.samples], workers) if decode else None
        images.append(image_table(name, data.samples, facts))
        boxes.append(box_table(name, data.samples))
    return pd.concat(images, ignore_index=True), pd.concat(boxes, ignore_index=True)


def _verdict(
    rules: dict[str, RuleResult],
    offenders: dict[str, set[str]],
    skipped: list[dict],
    image_frame: Any,
    policy: str,
    max_bad_fraction: float,
) -> tuple[bool, float, list[dict]]:
    """Whether the gate passes, the bad fraction and the quarantine list. A dataset-level
    error always fails; per-image errors fail under `fail`, and under `quarantine` only
    when more than `max_bad_fraction` of the images are bad."""
    bad = {
        key: reasons
        for key, reasons in offenders.items()
        if any(rules[r].severity == "error" for r in reasons)
    }
    dataset_failed = any(
        not r.success and r.severity == "error" and not RULES[r.rule].per_image
        for r in rules.values()
    )
    fraction = (len(bad) + len(skipped)) / max(len(image_frame) + len(skipped), 1)
    errors = any(not r.success and r.severity == "error" for r in rules.values())
    passed = not errors or (
        policy == "quarantine" and not dataset_failed and fraction <= max_bad_fraction
    )
    if policy != "quarantine":
        return passed, fraction, []
    files = dict(zip(image_frame["key"], image_frame["file"], strict=True))
    quarantined = [{"key": k, "file": files.get(k), "reasons": sorted(bad[k])} for k in sorted(bad)]
    return passed, fraction, quarantined + skipped


def _publish(report: CheckReport, context: Any, out: Path | None, *, kept: bool) -> None:
    """Data Docs (every site of a kept context, else sdod's own) and `report.json`."""
    if kept:
        context.build_data_docs()  # every site of the kept context, its own local_site too
    elif out is not None:
        context.build_data_docs(site_names=["sdod_checks"])
    if out is not None:
        report.data_docs = str(out / "data_docs" / "index.html")
        report.report_file = str(out / "report.json")
        atomic_write_json(out / "report.json", report.to_dict())


def validate_inputs(
    *,
    num_classes: int,
    images: str | None = None,
    annotations: str | None = None,
    manifest: str | None = None,
    rec: str | None = None,
    label_width: int = 350,
    policy: str = DEFAULT.policy,
    max_bad_fraction: float = DEFAULT.max_bad_fraction,
    report: str | None = None,
    workers: int = 2,
    grayscale: str = DEFAULT.grayscale,
    max_class_ratio: float = DEFAULT.max_class_ratio,
    gx_project: str | None = None,
) -> CheckReport:
    """Run the annotation suite on one dataset (the CLI's `validate`)."""
    # non-strict readers: the gate reports (or quarantines) every bad record with the rest
    if rec:
        from sdod.data.rec_samples import read_rec

        data = read_rec(rec, strict=False)
    elif manifest:
        from sdod.data.manifest import read_manifest

        data = read_manifest(manifest, strict=False)
    elif images and annotations:
        from sdod.data.imagejson import read_image_json

        data = read_image_json(images, annotations, strict=False)
    else:
        from sdod.data.channels import samples_from_paths

        data = samples_from_paths(images=images, annotations=annotations, manifest=manifest)[0]
    return run_checks(
        {"train": data},
        num_classes=num_classes,
        label_width=label_width,
        policy=policy,
        max_bad_fraction=max_bad_fraction,
        report_dir=report,
        workers=workers,
        grayscale=grayscale,
        max_class_ratio=max_class_ratio,
        gx_project=gx_project,
    )
