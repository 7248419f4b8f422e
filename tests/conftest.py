import os
import tempfile

import pytest

# Tests never touch a developer's ~/airflow: Airflow reads AIRFLOW_HOME when first imported.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="mlops-test-airflow-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")


# `make test` runs on two pytest-xdist workers with --dist loadgroup. Each end-to-end stack is one group, so
# its tests (and its package- or module-scoped stack) stay on one worker; the suites sharing the e2e package's
# stack are one group; every other module is a group of its own (its module fixtures are built once). The
# groups are queued longest first (GROUP_ORDER, from measured suite times), so the two workers finish close
# together.
E2E_SHARED = "e2e-shared-stack"
GROUPS = {
    "tests/e2e/test_canary.py": "e2e-canary",
    "tests/e2e/test_monitoring.py": "e2e-monitoring",
    "tests/e2e/test_fraud_training.py": E2E_SHARED,
    "tests/e2e/test_second_pipeline.py": E2E_SHARED,
    "tests/prod/": "prod",
    "tests/serving/": "serving",
}
GROUP_ORDER = ["e2e-canary", E2E_SHARED, "e2e-monitoring", "prod", "serving"]


def xdist_group_of(path: str) -> str:
    for prefix, group in GROUPS.items():
        if path.startswith(prefix):
            return group
    return path


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook on the worker reads the marks
def pytest_collection_modifyitems(config, items):
    root = config.rootpath
    for item in items:
        item.add_marker(pytest.mark.xdist_group(xdist_group_of(item.path.relative_to(root).as_posix())))
    rank = {group: i for i, group in enumerate(GROUP_ORDER)}
    items.sort(key=lambda item: rank.get(xdist_group_of(item.path.relative_to(root).as_posix()), len(rank)))
