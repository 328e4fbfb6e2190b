"""Suite-wide settings: with PEMSCL_NO_SKIPS=1 (`make test`, CI) a run that skipped any test fails.

The suite carries its own data (tests/fixtures) and models, so in a plain clone nothing has a reason to skip; a
skip there means lost coverage, which must not pass silently.
"""

import os


def pytest_sessionfinish(session, exitstatus):
    if not os.environ.get("PEMSCL_NO_SKIPS") or exitstatus != 0:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped:
        reporter.write_line(f"PEMSCL_NO_SKIPS: {len(skipped)} test(s) skipped; every test must run.", red=True)
        session.exitstatus = 1
