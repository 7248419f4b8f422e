"""Features defined once, computed in batch and online.

* ``definition``: what the per-entity history features and time parts are (windows, cap, fallbacks) and how
  an event's window aggregates become its features (``combine``): the one definition.
* batch execution: ``ml_ops.pipeline.features.build_features`` (a day and its lookback, vectorised).
* online execution: ``online`` (one event at a time, from its entity's state in an online store).
* ``store``: the online store (Redis in production, SQLite embedded), ``materialize``: (re)building it from
  the validated raw partitions.
"""
