"""The embedded stack, demo, traffic generator, simulator and Airflow REST client for a laptop."""
