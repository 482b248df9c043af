-- The tuning jobs' studies (Optuna) live in their own database: Optuna and Airflow both
-- keep an `alembic_version` table, so they cannot share one.
CREATE DATABASE sdod_tuning OWNER airflow;
