"""Maintenance scripts for the repository itself."""
