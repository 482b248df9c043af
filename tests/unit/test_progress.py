"""`make demo`'s progress filter over real `airflow dags test` log lines."""

from __future__ import annotations

from sdod.cli.progress import progress

LOG = """\
2026-12-01T09:06:44.926080Z [info     ] [DAG TEST] starting task_id=sdod.train map_index=-1 [airflow.sdk.definitions.dag] loc=dag.py:1501
2026-12-01T09:06:44.948558Z [info     ] Task started                   [airflow.api_fastapi.execution_api.routes.task_instances] hostname=vm
2026-12-01T09:06:51.066939Z [info     ] #quality_metric: host=algo-1, epoch=0, validation mAP <score>=(0.25) [airflow.task.operators.sdod_operators.SSDTrainingOperator] loc=sdod_operators.py:198
2026-12-01T09:06:51.066939Z [info     ] #quality_metric: host=algo-1, epoch=0, batch=3 train cross_entropy <loss>=(2.1) [airflow.task.operators.sdod_operators.SSDTrainingOperator] loc=x
2026-12-01T09:06:52.281950Z [info     ] sdod train: model.tar.gz uploaded to s3://b/out/j/output/model.tar.gz [airflow.task.operators.sdod_operators.SSDTrainingOperator] loc=sdod_operators.py:198
2026-12-01T09:07:14.241965Z [info     ] [DAG TEST] end task task_id=sdod.train map_index=-1 [airflow.sdk.definitions.dag] loc=dag.py:1563
2026-12-01T09:07:15.0Z [error    ] Task failed with exception     [task] loc=task_runner.py:1
2026-12-01T09:07:15.712760Z [info     ] DagRun Finished: dag_id=sdod_train, run_duration=29.99, state=failed, run_type=manual [airflow.models.dagrun.DagRun]
"""


def test_shows_tasks_with_their_durations_metric_lines_errors_and_the_end() -> None:
    assert list(progress(LOG.splitlines())) == [
        "demo: train ...",
        "  #quality_metric: host=algo-1, epoch=0, validation mAP <score>=(0.25)",
        "  sdod train: model.tar.gz uploaded to s3://b/out/j/output/model.tar.gz",
        "demo: train ended (29 s)",
        "  error: Task failed with exception",
        "demo: the DAG run ended: failed",
    ]
