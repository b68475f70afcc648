"""Self-contained HTML views of an evaluation and of a gate: one file each, no network request."""
