"""The annotation rules, as a Great Expectations 1.x suite defined in code.

Every expectation carries `meta.rule` (a stable id), `meta.severity` (error or warning),
a description and the fix, so the report can say what broke, where, and what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rule:
    id: str
    severity: str  # "error" fails the gate (or quarantines), "warning" is reported
    table: str  # "images" or "boxes"
    per_image: bool  # offending rows name images: quarantine can drop them
    description: str
    fix: str


RULES = {r.id: r for r in [
    Rule("annotation_pairing", "error", "files", True, "every image has an annotation JSON of the same name and every annotation an image",
         "upload the missing image or annotation, or remove the orphan"),
    Rule("annotation_valid", "error", "files", True, "the annotation is valid JSON with SageMaker's fields, and `file` stays inside the channel",
         "fix the annotation file (the message names the field)"),
    Rule("category_names_agree", "error", "files", True, "a class id has the same name in every annotation's `categories`",
         "use one class-name mapping for the whole dataset"),
    Rule("image_decodes", "error", "images", True, "the image file decodes completely",
         "re-export or re-upload the image (it is truncated, empty or not an image)"),
    Rule("image_size_matches", "error", "images", True, "the image's real width/height equal the declared image_size",
         "fix image_size in the annotation (or the image was resized after labelling)"),
    Rule("three_channels", "warning", "images", True, "the image is RGB (grayscale/alpha are converted when training; an error with grayscale=reject)",
         "nothing to do, or convert the images to RGB to match SageMaker's 3-channel rule"),
    Rule("unique_keys", "error", "images", True, "each image appears once per channel",
         "remove the duplicate annotation"),
    Rule("pixel_coordinates", "error", "images", True, "box coordinates are pixels, not 0..1 fractions",
         "multiply left/width by the image width and top/height by its height"),
    Rule("objects_fit_label_width", "error", "images", True, "objects per image fit label_width ((label_width-2)/5)",
         "raise the label_width hyperparameter"),
    Rule("class_id_in_range", "error", "boxes", True, "class_id is an integer in [0, num_classes)",
         "number classes from 0 to num_classes-1, or raise num_classes"),
    Rule("box_positive_size", "error", "boxes", True, "box width and height are > 0",
         "remove or fix boxes with zero or negative size"),
    Rule("box_coordinates_finite", "error", "boxes", True, "box coordinates are finite numbers (not NaN or infinity)",
         "fix or remove the box (its other rules cannot judge it)"),
    Rule("box_inside_image", "error", "boxes", True, "the box lies inside the image (within the tolerance)",
         "clip the box to the image or fix its coordinates"),
    Rule("small_boxes", "warning", "boxes", True, "boxes are at least min_box_px on each side",
         "tiny boxes are hard to learn; check they are intended"),
    Rule("train_has_every_class", "warning", "boxes", False, "every class 0..num_classes-1 appears in train",
         "a class nobody drew (common in Ground Truth class maps) is never predicted: add examples of it, or accept that"),
    Rule("validation_classes_in_train", "error", "boxes", False, "validation classes are a subset of train classes",
         "add training examples of those classes"),
    Rule("channels_not_empty", "error", "images", False, "train and validation each hold images",
         "upload data to the empty channel"),
    Rule("class_balance", "warning", "boxes", False, "in train, the most frequent class has at most max_class_ratio times the boxes of the rarest",
         "add examples of the rare classes (or accept lower AP on them)"),
]}  # fmt: skip


def _meta(rule_id: str, severity: str | None = None) -> dict[str, Any]:
    rule = RULES[rule_id]
    return {
        "rule": rule.id,
        "severity": severity or rule.severity,
        "description": rule.description,
        "fix": rule.fix,
    }


@dataclass(frozen=True)
class SuiteParams:
    num_classes: int
    label_width: int
    tolerance_px: float
    min_box_px: float
    channels: tuple[str, ...]
    train_classes: tuple[int, ...]
    decoded: bool
    grayscale: str = "convert"  # "reject": a non-RGB image is an error, not a warning


def expectations(params: SuiteParams) -> dict[str, list[Any]]:
    """The suite for this run: expectations per table (`images`, `boxes`)."""
    return {"images": _image_expectations(params), "boxes": _box_expectations(params)}


def _image_expectations(params: SuiteParams) -> list[Any]:
    import great_expectations as gx
    from great_expectations.expectations.row_conditions import Column

    e = gx.expectations
    images: list[Any] = [
        e.ExpectColumnValuesToBeUnique(column="key", meta=_meta("unique_keys")),
        e.ExpectColumnValuesToBeInSet(
            column="looks_normalized", value_set=[False], meta=_meta("pixel_coordinates")
        ),
        e.ExpectColumnValuesToBeBetween(
            column="n_objects",
            max_value=(params.label_width - 2) // 5,
            meta=_meta("objects_fit_label_width"),
        ),
    ]
    for channel in ("train", "validation"):
        if channel in params.channels:
            images.append(
                e.ExpectTableRowCountToBeBetween(
                    min_value=1,
                    row_condition=Column("channel") == channel,
                    meta=_meta("channels_not_empty"),
                )
            )
    if not params.decoded:
        return images
    three_channels = "error" if params.grayscale == "reject" else "warning"
    return [
        *images,
        e.ExpectColumnValuesToBeInSet(
            column="decodes", value_set=[True], meta=_meta("image_decodes")
        ),
        *(
            e.ExpectColumnPairValuesToBeEqual(
                column_A=f"decoded_{side}",
                column_B=f"declared_{side}",
                meta=_meta("image_size_matches"),
            )
            for side in ("width", "height")
        ),
        e.ExpectColumnValuesToBeInSet(
            column="mode", value_set=["RGB"], meta=_meta("three_channels", three_channels)
        ),
    ]


def _box_expectations(params: SuiteParams) -> list[Any]:
    import great_expectations as gx
    from great_expectations.expectations.row_conditions import Column

    e = gx.expectations
    k = params.num_classes
    boxes: list[Any] = [
        e.ExpectColumnValuesToBeBetween(
            column="class_id", min_value=0, max_value=k - 1, meta=_meta("class_id_in_range")
        ),
        # the range rules below skip NaN as a missing value: this one does not
        e.ExpectColumnValuesToBeInSet(
            column="finite", value_set=[True], meta=_meta("box_coordinates_finite")
        ),
    ]
    for side in ("box_width", "box_height"):
        boxes.append(
            e.ExpectColumnValuesToBeBetween(
                column=side, min_value=0, strict_min=True, meta=_meta("box_positive_size")
            )
        )
    boxes.append(
        e.ExpectColumnValuesToBeBetween(
            column="overflow", max_value=params.tolerance_px, meta=_meta("box_inside_image")
        )
    )
    for side in ("box_width", "box_height"):
        boxes.append(
            e.ExpectColumnValuesToBeBetween(
                column=side, min_value=params.min_box_px, meta=_meta("small_boxes")
            )
        )
    boxes.append(
        e.ExpectColumnDistinctValuesToContainSet(
            column="class_id",
            value_set=list(range(k)),
            row_condition=Column("channel") == "train",
            meta=_meta("train_has_every_class"),
        )
    )
    if "validation" in params.channels:
        boxes.append(
            e.ExpectColumnValuesToBeInSet(
                column="class_id",
                value_set=list(params.train_classes),
                row_condition=Column("channel") == "validation",
                meta=_meta("validation_classes_in_train"),
            )
        )
    return boxes
