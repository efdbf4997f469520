"""Fixtures: a fresh Ordo broker per test, stopped with SIGTERM at teardown.

`broker`       a broker with the default test config (anonymous allowed).
`make_broker`  a factory: make_broker(config_text) starts one with that config.
`queue`        a queue name unique to the test.

A test fails (as a teardown error) if its broker does not exit with status 0
within a few seconds of SIGTERM. When a test fails, the logs of its brokers are
attached to the report.
"""

import uuid

import pytest

from ordo_broker import DEFAULT_CONFIG, Broker


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for i, b in enumerate(getattr(item, "ordo_brokers", [])):
            rep.sections.append((f"ordo broker {i} log ({b.dir})", b.log()))


@pytest.fixture
def make_broker(request, tmp_path):
    brokers = []
    request.node.ordo_brokers = brokers

    def make(config=DEFAULT_CONFIG):
        b = Broker(tmp_path / f"broker{len(brokers)}", config)
        brokers.append(b)
        return b.start()

    yield make
    problems = [p for p in (b.stop() for b in brokers) if p]
    if problems:
        pytest.fail("; ".join(problems) + "\n" + "\n".join(b.log() for b in brokers))


@pytest.fixture
def broker(make_broker):
    return make_broker()


@pytest.fixture
def queue(request):
    name = request.node.name.replace("[", "-").replace("]", "")
    return f"{name}-{uuid.uuid4().hex[:8]}"
