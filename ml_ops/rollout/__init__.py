"""Deployment state, the canary judge and the canary rollout logic (Airflow-free)."""
