"""restore-verify's reports: the checklist outcome, result.json, and the pytest-html report."""
