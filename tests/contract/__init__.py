"""Contract suites: the same tests run against every storage and state backend."""
