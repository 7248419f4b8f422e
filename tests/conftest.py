import os
import tempfile

# Tests never touch a developer's ~/airflow: Airflow reads AIRFLOW_HOME when first imported.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="mlops-test-airflow-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
