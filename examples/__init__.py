"""Runnable host applications that mount tusserver under ``/uploads`` (docs/embedding.md)."""
