"""The indexer service: normalized documents into the passage index (services/retrieval)."""
