"""Short-lived signed download URLs (built in its own issue)."""
