"""Airflow operators for sdod.

`SSDTrainingOperator` is shaped like the Amazon provider's `SageMakerTrainingOperator`:
it takes the CreateTrainingJob request you already have, validates it in `__init__` (no I/O
there), renders `config` as a template field, and ends in one of three explicit outcomes.
Instead of calling SageMaker it runs the job on this worker's GPUs: `python -m sdod train`
under `sdod.train.process.TrainingProcess` (its own process group, dying with the task,
its log streamed into the task log, its metric lines parsed into XCom,
`StoppingCondition.MaxRuntimeInSeconds` enforced with SIGTERM, a 120 s grace period, then
SIGKILL). `on_kill` stops the whole process group. For OpenLineage it reports the channels
it trained from and the model.tar.gz it made (`sdod_lineage`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException

if TYPE_CHECKING:
    from sdod.joblayout import JobLayout
    from sdod.jobspec import TrainingJobSpec
    from sdod.train.process import TrainingProcess

ON_KILL_GRACE_SECONDS = 30  # a killed task's job: SIGTERM, then SIGKILL after this


def s3_options_from_connection(conn_id: str | None) -> Any:
    """`sdod.storage.S3Options` from an Airflow AWS connection (None: AWS environment)."""
    from sdod.storage import S3Options

    if not conn_id:
        return None
    from airflow.sdk import BaseHook

    try:
        conn = BaseHook.get_connection(conn_id)
    except Exception:  # no such connection: fall back to the AWS environment
        return None
    extra = conn.extra_dejson or {}
    return S3Options(
        endpoint_url=extra.get("endpoint_url"),
        region_name=extra.get("region_name"),
        access_key_id=conn.login or extra.get("aws_access_key_id"),
        secret_access_key=conn.password or extra.get("aws_secret_access_key"),
        session_token=extra.get("aws_session_token"),
    )


class SSDTrainingOperator(BaseOperator):
    """Run a SageMaker-style Object Detection training job with sdod on this worker.

    :param config: the CreateTrainingJob request (templated).
    :param job_root_base: local folder for the job's working copy (a cache: the job reads
        its channels from their URIs, keeps checkpoints at CheckpointConfig.S3Uri and
        uploads `S3OutputPath/<job>/output/model.tar.gz`); default: this machine's cache.
    :param action_if_job_exists: "timestamp" (append one to the name when
        `S3OutputPath/<job>/output/model.tar.gz` already exists) or "fail". A job without
        a model there yet resumes from its checkpoint, on whichever worker runs the retry.
    :param stopped_is_success: a job stopped by StoppingCondition still has a valid model
        (SageMaker documents it as usable): succeed with a warning (default) or fail.
    :param check_interval: seconds between checks of the child process.
    :param print_log: stream the job's log lines into the task log.
    :param aws_conn_id: Airflow AWS connection for S3 (endpoint URL in its extras for MinIO).
    """

    template_fields = ("config", "job_root_base")
    ui_color = "#f0eee4"

    def __init__(
        self,
        *,
        config: dict[str, Any] | str,
        job_root_base: str | None = None,
        action_if_job_exists: str = "timestamp",
        stopped_is_success: bool = True,
        check_interval: float = 2.0,
        print_log: bool = True,
        aws_conn_id: str | None = "aws_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if action_if_job_exists not in ("timestamp", "fail"):
            raise ValueError(
                f"action_if_job_exists must be 'timestamp' or 'fail', got {action_if_job_exists!r}"
            )
        if check_interval <= 0:
            raise ValueError(f"check_interval must be positive, got {check_interval}")
        if isinstance(config, dict):  # templated strings are validated after rendering
            from sdod.jobspec import parse_job_spec

            parse_job_spec(config)
        self.config = config
        self.job_root_base = job_root_base
        self.action_if_job_exists = action_if_job_exists
        self.stopped_is_success = stopped_is_success
        self.check_interval = check_interval
        self.print_log = print_log
        self.aws_conn_id = aws_conn_id
        self._process: TrainingProcess | None = None
        self._result: dict[str, Any] | None = None  # for lineage, once the job delivered

    def _named(self, config: dict[str, Any], s3: Any) -> TrainingJobSpec:
        """The job to run: renamed with a timestamp when a job of its name has already
        delivered a model (SageMaker refuses a duplicate TrainingJobName)."""
        from sdod import stages
        from sdod.storage import exists
        from sdod.workspace import output_uris

        spec = stages.parse_spec(config)
        done = output_uris(spec).model
        if not exists(done, s3=s3):
            return spec
        if self.action_if_job_exists == "fail":
            raise AirflowException(f"training job {spec.name} already delivered {done}")
        name = f"{spec.name[:52]}-{int(time.time())}"
        self.log.info(
            "training job %s already delivered %s: running it as %s", spec.name, done, name
        )
        return stages.parse_spec({**config, "TrainingJobName": name})

    def execute(self, context: Any) -> dict[str, Any]:
        from sdod import stages
        from sdod.errors import UserError
        from sdod.joblayout import JobLayout
        from sdod.storage import cache_root
        from sdod.train.process import TrainingProcess, job_exit_code, train_command

        if not isinstance(self.config, dict):
            raise AirflowException(
                f"config must render to a dict, got {type(self.config).__name__}"
            )
        s3 = s3_options_from_connection(self.aws_conn_id)
        try:
            spec = self._named(self.config, s3)
            base = Path(self.job_root_base) if self.job_root_base else cache_root() / "train"
            layout = JobLayout(base / spec.name)
            stages.ingest(job_spec=spec, job_root=str(layout.root), s3=s3)
        except UserError as exc:
            raise AirflowException(f"training job spec/input: {exc}") from None
        # the job bounds itself (MaxRuntime once running; all of it within MaxWait, which
        # includes waiting for a training slot) and stops itself at its deadline: this
        # backstop allows the longer of the two, and a few seconds more
        backstop = max(spec.max_runtime_seconds, spec.max_wait_seconds or 0) + 5
        process = TrainingProcess(
            train_command(job_root=layout.root),
            env={**os.environ, **(s3.env() if s3 is not None else {})},
            deadline_seconds=backstop,
            on_line=(lambda line: self.log.info("%s", line)) if self.print_log else None,
            log=lambda message: self.log.warning("%s", message),
            poll_interval=self.check_interval,
        )
        self.log.info("starting: %s", " ".join(process.command))
        process.start()
        self._process = process
        try:
            outcome = process.wait()
        finally:
            self._process = None
        code = job_exit_code(outcome, layout.root)
        self._result = self._outcome(code, layout, spec, outcome.metrics)
        return self._result

    def _outcome(
        self, code: int, layout: JobLayout, spec: TrainingJobSpec, metrics: dict[str, Any]
    ) -> dict[str, Any]:
        """XCom: the job's name, URIs and metrics; nothing on this machine's disk."""
        from sdod.joblayout import EXIT_COMPLETED, EXIT_STOPPED
        from sdod.workspace import output_uris

        uris = output_uris(spec)
        maps = metrics["validation:mAP"]
        result = {
            "job_name": spec.name,
            "model": uris.model,
            "output_uri": uris.output,
            "checkpoint_uri": spec.checkpoint_uri,
            "final_validation_mAP": maps[-1]["value"] if maps else None,
            "best_validation_mAP": max((m["value"] for m in maps), default=None),
            "metrics": metrics,
            "exit_code": code,
        }
        if code == EXIT_COMPLETED:
            return {"status": "Completed", **result}
        if code == EXIT_STOPPED:
            message = "training job Stopped by StoppingCondition; its model.tar.gz is valid"
            if not self.stopped_is_success:
                raise AirflowException(message)
            self.log.warning("%s", message)
            return {"status": "Stopped", **result}
        failure = layout.output_dir / "failure"
        reason = failure.read_text().strip() if failure.is_file() else f"exit code {code}"
        raise AirflowException(f"training job Failed: {reason}")

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage (the provider calls it, on failure too): the channels read, the model
        made."""
        from sdod_lineage import operator_lineage, training_lineage

        return operator_lineage(training_lineage(self.config, self._result))

    def on_kill(self) -> None:
        """Stop the whole job: SIGTERM to its process group, SIGKILL if it lingers."""
        process = self._process
        if process is not None:
            process.stop(wait=ON_KILL_GRACE_SECONDS)
