"""The Airflow UI in a real browser: Debian's chromium driven by Playwright (never a
downloaded browser). Log in, fill sdod_train's trigger form, trigger, watch the run reach
success, read the train task's log. Screenshots go to `.state/test-artifacts/ui/`."""

from __future__ import annotations

import json
import shutil
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.conftest import BUCKET, PASSWORD, REPO, USER, Cluster
from tests.deploy.test_cluster import HP

pytestmark = pytest.mark.deploy
ARTIFACTS = REPO / ".state" / "test-artifacts" / "ui"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
PARAMS = ["job_name", "data_uri", "output_uri", "work_uri", "model_registry_uri", "model_group",
          "hyperparameters", "max_runtime_seconds", "check_policy", "min_map"]  # fmt: skip


@pytest.fixture(scope="module")
def browser() -> Any:
    import os

    chromium = shutil.which("chromium")
    if chromium is None:
        message = "Debian's chromium is not installed (make setup installs it when run as root)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium, headless=True, args=FLAGS)
        yield launched
        launched.close()


def _shot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def test_trigger_from_the_form_watch_the_run_and_read_the_train_log(
    cluster: Cluster, browser: Any, s3: Any, data: dict[str, str]
) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{cluster.api}/")
    page.fill("input[name=username]", USER)
    page.fill("input[name=password]", PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{cluster.api}/", timeout=30_000)

    page.goto(f"{cluster.api}/dags/sdod_train")
    page.get_by_role("button", name="Trigger").first.click()
    form = page.get_by_role("dialog")
    form.get_by_text("Run Parameters").wait_for()
    text = form.inner_text()
    for name in PARAMS:  # every Param with its description
        assert name in text, name
    for description in ("TrainingJobName", "S3OutputPath", "StoppingCondition.MaxRuntimeInSeconds",
                        "annotation gate: stop, or drop bad images"):  # fmt: skip
        assert description in text, description
    for name in ("data_uri", "output_uri", "work_uri", "model_registry_uri"):
        value = form.locator(f"input[name=element_{name}]").input_value()
        assert value.startswith("s3://"), (name, value)  # the cluster's bucket, no machine path
    _shot(page, "trigger-form")

    form.locator("input[name=element_job_name]").fill("ui-run")
    form.locator("input[name=element_data_uri]").fill(data["good"])
    form.locator("input[name=element_output_uri]").fill(f"s3://{BUCKET}/models")
    form.get_by_role("spinbutton").last.fill("0")  # min_map
    editor = form.locator(".monaco-editor").first  # hyperparameters: epochs changed
    assert '"base_network"' in editor.inner_text().replace("\u00a0", " "), "not hyperparameters"
    editor.click()
    page.keyboard.press("Control+A")
    page.keyboard.insert_text(json.dumps({**HP, "epochs": "3"}))
    page.keyboard.press("Shift+Control+End")  # what the editor's auto-close left behind
    page.keyboard.press("Delete")
    editor.scroll_into_view_if_needed()
    _shot(page, "trigger-form-filled")
    form.get_by_role("button", name="Trigger").click()

    page.wait_for_url("**/runs/**", timeout=30_000)
    run_id = urllib.parse.unquote(page.url.rstrip("/").split("/runs/")[1].split("/")[0])
    assert cluster.wait_run(run_id, timeout=600) == "success", cluster.tasks(run_id)
    conf = cluster.call("GET", f"/api/v2/dags/sdod_train/dagRuns/{run_id}").json()["conf"]
    assert conf["hyperparameters"]["epochs"] == "3" and conf["job_name"] == "ui-run"
    page.reload()
    page.get_by_text("success", exact=False).first.wait_for(timeout=30_000)
    _shot(page, "run-success")

    quoted = urllib.parse.quote(run_id)
    page.goto(f"{cluster.api}/dags/sdod_train/runs/{quoted}/tasks/sdod.train")
    deadline = time.monotonic() + 60
    while "validation mAP" not in page.inner_text("body") and time.monotonic() < deadline:
        time.sleep(1)
    body = page.inner_text("body")
    assert body.count("validation mAP <score>=") == 3, body[-2000:]  # one line per epoch
    _shot(page, "train-log")
    client, _ = s3
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix="registry/ui-run/")
    assert [o["Key"] for o in listed.get("Contents", [])][-1].endswith("v1/model.tar.gz")
