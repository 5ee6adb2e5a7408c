"""Shared test set-up. Fixtures live in plugin modules beside this file, one per area."""

import signal

pytest_plugins = ["fixtures_web", "fixtures_cluster"]

# Started in the background (a shell's `&`: make test's suites, a CI step), pytest inherits
# SIGINT ignored, and so would every program a test starts: each Ctrl-C test would hang.
# Python's handler again: exec then gives those programs the default, as in a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
