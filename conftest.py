"""restore-verify: the suite's plugins (see fixtures/ and reports/); checks live in checks/."""

pytest_plugins = (
    "reports.plugin",  # first: fixtures.session imports it, and pytest rewrites only what it imports itself
    "fixtures.session",
    "fixtures.connections",
    "fixtures.outcomes",  # before batches and params, which import it
    "fixtures.batches",
    "fixtures.params",
    "fixtures.findings",
)
