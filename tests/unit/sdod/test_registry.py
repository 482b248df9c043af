"""Publish is a gated promotion into the model registry: versions, approval last, refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sdod import registry, stages
from sdod.artifact import Artifact, ModelConfig, write_artifact
from sdod.errors import UserError
from sdod.model.networks import build_network


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real, loadable archive whose *training* mAP is high (0.9)."""
    from safetensors.torch import save

    config = ModelConfig("mobilenet-v3", 3, 300, ("a", "b", "c"))
    state = {k: v.contiguous() for k, v in build_network(config).state_dict().items()}
    path = tmp_path_factory.mktemp("model") / "model.tar.gz"
    return write_artifact(
        path,
        Artifact(save(state), {"base_network": "mobilenet-v3"}, config.to_dict(),
                 {"validation:mAP": 0.9}),
    )  # fmt: skip


def _evaluation(folder: Path, score: float) -> str:
    path = folder / f"eval-{score}" / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"metric": "voc07", "iou_threshold": 0.5, "mAP": score}))
    return str(path)


def _files(group: Path) -> list[str]:
    return sorted(p.relative_to(group).as_posix() for p in group.rglob("*") if p.is_file())


def test_the_gate_is_the_evaluation_map_not_the_training_one(model: Path, tmp_path: Path) -> None:
    group = tmp_path / "registry" / "detector"
    with pytest.raises(UserError, match=r"evaluation mAP 0.3 is below min_map 0.5"):
        stages.publish(model=str(model), to=str(group), evaluation=_evaluation(tmp_path, 0.3),
                       min_map=0.5)  # fmt: skip
    assert not group.exists()  # nothing written, although the training mAP (0.9) passes
    result = stages.publish(
        model=str(model), to=str(group), evaluation=_evaluation(tmp_path, 0.6), min_map=0.5,
        training_job="job-1", data={"train": "s3://b/train/"},
    )  # fmt: skip
    assert result.version == 1 and result.mAP == 0.6
    assert _files(group) == ["v1/approval.json", "v1/metrics.json", "v1/model.tar.gz"]
    approval = json.loads((group / "v1" / "approval.json").read_text())
    assert approval["mAP"] == 0.6 and approval["training_mAP"] == 0.9
    assert approval["mAP_source"] == "evaluation" and approval["training_job"] == "job-1"
    assert approval["ModelPackageGroupName"] == "detector"
    assert approval["ModelApprovalStatus"] == "Approved" and approval["data"]["train"]


def test_a_regression_is_refused_unless_forced(model: Path, tmp_path: Path) -> None:
    group = str(tmp_path / "detector")
    stages.publish(model=str(model), to=group, evaluation=_evaluation(tmp_path, 0.7))
    with pytest.raises(UserError, match=r"below version v1's 0.7"):
        stages.publish(model=str(model), to=group, evaluation=_evaluation(tmp_path, 0.65))
    assert [v.number for v in registry.list_versions(group)] == [1]
    forced = stages.publish(
        model=str(model), to=group, evaluation=_evaluation(tmp_path, 0.65), force=True
    )
    assert forced.version == 2 and forced.previous_mAP == 0.7 and forced.approval["forced"]
    better = stages.publish(model=str(model), to=group, evaluation=_evaluation(tmp_path, 0.8))
    assert better.version == 3 and better.previous_mAP == 0.65 and not better.approval["forced"]
    assert registry.resolve_model(group) == registry.resolve_model(f"{group}/v3")


def test_a_publish_that_fails_half_way_leaves_no_visible_version(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = tmp_path / "detector"
    stages.publish(model=str(model), to=str(group), evaluation=_evaluation(tmp_path, 0.5))
    real = registry.write_bytes

    def dies_at_the_approval(uri: str, data: bytes, **kw: object) -> str:
        if uri.endswith(registry.APPROVAL):
            raise OSError("connection reset while writing the approval")
        return real(uri, data, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(registry, "write_bytes", dies_at_the_approval)
    with pytest.raises(OSError):
        stages.publish(model=str(model), to=str(group), evaluation=_evaluation(tmp_path, 0.9))
    monkeypatch.undo()
    assert (group / "v2" / "model.tar.gz").is_file()  # the upload got this far ...
    assert [v.number for v in registry.list_versions(str(group))] == [1]  # ... but v2 is not
    with pytest.raises(UserError, match="no approved model version"):
        registry.resolve_model(str(group / "v2"))
    assert registry.resolve_model(str(group)) == group / "v1" / "model.tar.gz"
    again = stages.publish(model=str(model), to=str(group), evaluation=_evaluation(tmp_path, 0.9))
    # the dead publish keeps its claim on v2 (a number is never reused): the retry is v3
    assert again.version == 3 and (group / "v3" / "approval.json").is_file()
    assert [v.number for v in registry.list_versions(str(group))] == [1, 3]


def test_cli_publish_refusal_is_one_line_and_exit_2(model: Path, tmp_path: Path) -> None:
    group = tmp_path / "cli-group"
    cmd = [sys.executable, "-m", "sdod", "publish", "--model", str(model), "--to", str(group),
           "--evaluation", _evaluation(tmp_path, 0.2), "--min-map", "0.5"]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "evaluation mAP 0.2 is below min_map 0.5" in run.stderr
    assert not group.exists()
    ok = subprocess.run([*cmd[:-2], "--json"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["version"] == 1
    shown = subprocess.run(
        [sys.executable, "-m", "sdod", "inspect-model", str(group)], capture_output=True, text=True
    )
    assert shown.returncode == 0 and "registry: version 1 of cli-group" in shown.stdout
