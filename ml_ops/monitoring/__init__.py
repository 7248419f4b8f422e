"""Nightly monitoring: drift, quality, the day's current data and champion, the step, retrain policy."""
