# One image for every Airflow role of sdod (api-server, scheduler, dag-processor, triggerer,
# celery worker): `docker run sdod-airflow <airflow subcommand>`, and a SageMaker
# bring-your-own training and inference container (`train`, `serve`). docker-compose.yaml
# uses it.
#
#   docker build -t sdod-airflow .
#   docker run --rm sdod-airflow version
FROM python:3.11-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential tini \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/sdod
# the exact pins first (a layer that changes only with them): Airflow with the Celery
# provider, the PostgreSQL driver and the Redis client, torch (CUDA build) and the rest
COPY requirements.txt requirements.lock ./
RUN pip install --no-cache-dir -r requirements.txt -c requirements.lock

COPY pyproject.toml README.md ./
COPY sdod ./sdod
RUN pip install --no-cache-dir --no-deps --no-build-isolation -e .
COPY dags ./dags
COPY plugins ./plugins
COPY include ./include

ENV AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/sdod/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/sdod/plugins \
    PYTHONUNBUFFERED=1
RUN mkdir -p /opt/airflow/logs

# tini reaps the training job's processes. `sdod.entrypoint` runs `train` and `serve` as
# SageMaker's container contract (/opt/ml, read by sdod.container); every other command is
# an Airflow one (api-server, scheduler, celery worker, ...), so one image serves both.
ENTRYPOINT ["tini", "--", "python", "-m", "sdod.entrypoint"]
CMD ["version"]
