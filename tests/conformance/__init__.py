"""HTTP conformance suite for tus 1.0.0, table-driven; docs/protocol.md explains each choice."""
