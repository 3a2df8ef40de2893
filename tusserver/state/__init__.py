"""Upload state (offsets, lengths, metadata) and per-upload locks, apart from the bytes."""
