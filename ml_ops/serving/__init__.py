"""The serving gateway: one HTTP service for every pipeline's model.

It follows the MLflow aliases ``champion`` and ``canary`` and the deployment state the canary DAG writes
(``ml_ops.rollout.deployment``), routes each request row to one of the two by a sticky hash of its routing key,
validates inputs against the model version's signature, and logs every prediction (and the labels posted
back) as parquet parts in S3. ``python -m ml_ops.serving`` runs it; see ``ml_ops.serving.app`` for the
routes and ``ml_ops.serving.settings`` for the environment variables.

Modules: ``settings`` (env), ``app`` (HTTP), ``service`` (one request: parse, route, predict, log),
``schema`` (strict JSON parsing and signature validation), ``routing`` (sticky hash), ``models`` (alias and
state resolution, polling, version cache), ``runner`` (per-model prediction thread with natural batching),
``logbuffer`` (buffered partitioned parquet writes, dead letter), ``served`` (request ids feedback may
label), ``metrics`` (Prometheus), ``errors`` (the request error and its kinds), ``api`` (OpenAPI models).

Nothing here is imported by DAG files: this package may import pandas, numpy and mlflow freely.
"""
