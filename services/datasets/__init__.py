"""The dataset store in MinIO `datasets`: immutable parts (one per document version), how to list
them, and the snapshots that freeze them for training. The normalizer writes through it; tuning,
the demo, the CLI and the tests read through it."""
