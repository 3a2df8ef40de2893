"""Alembic environment and versions for the catalog schema (shipped so `tusserver migrate` works
from an installed wheel)."""
