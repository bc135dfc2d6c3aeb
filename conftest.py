"""restore-verify: the suite's plugins (see fixtures/ and reports/); checks live in checks/."""

pytest_plugins = (
    "fixtures.session",
    "fixtures.connections",
    "fixtures.catalog_params",
    "fixtures.outcomes",
    "fixtures.findings",
    "reports.plugin",
)
