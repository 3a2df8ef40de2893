"""HTTP conformance suite: tus 1.0.0 checklist (/work/shared/tus-conformance.md), table-driven."""
