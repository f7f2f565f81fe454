"""Shared pytest configuration."""


def pytest_configure(config):
    # Long-running tests (the 1,000,000-packet streaming run). They run by default, in CI
    # too; deselect locally with `-m "not slow"`.
    config.addinivalue_line("markers", "slow: long-running test (runs by default)")
