"""Benchmarks: run with ``make bench``; they print a table and assert nothing."""
