-- MLflow's tracking server and model registry (the `mlflow` service) keep their own
-- database: MLflow's migrations, like Airflow's and Optuna's, keep an `alembic_version` table.
CREATE DATABASE mlflow OWNER airflow;
