"""Airflow glue: the DAG factory, thin operators, the MLflow hook, notifiers."""
