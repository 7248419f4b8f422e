import os
import tempfile

# Tests never touch a developer's ~/airflow: Airflow reads AIRFLOW_HOME when first imported.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="mlops-test-airflow-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")


# `make test` runs on two pytest-xdist workers. Each end-to-end stack is one group, so its tests (and its
# package- or module-scoped stack) stay on one worker; the suites sharing the e2e package's stack are one group;
# every other module is a group of its own (its module fixtures are built once). The groups are queued longest
# first (GROUP_ORDER, from measured suite times), so the two workers finish close together. (xdist's own
# `xdist_group` marks cannot do this under pytest 9.2: they rewrite a node id attribute pytest no longer reads.)
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


def group_of(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    for prefix, group in GROUPS.items():
        if path.startswith(prefix):
            return group
    return path


def pytest_collection_modifyitems(config, items):
    rank = {group: i for i, group in enumerate(GROUP_ORDER)}
    items.sort(key=lambda item: rank.get(group_of(item.nodeid), len(rank)))


class XdistGroups:
    """Registered only when xdist is loaded (`-p no:xdist` must keep working): its hook is xdist's."""

    def pytest_xdist_make_scheduler(self, config, log):
        from xdist.scheduler import LoadScopeScheduling

        class GroupScheduling(LoadScopeScheduling):
            """xdist's load-by-scope scheduling with our groups as the scopes, in collection order."""

            def _split_scope(self, nodeid: str) -> str:
                return group_of(nodeid)

        return GroupScheduling(config, log)


def pytest_configure(config):
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(XdistGroups(), "mlops-xdist-groups")
