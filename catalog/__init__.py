"""Finished uploads as searchable records (built in its own issue)."""
