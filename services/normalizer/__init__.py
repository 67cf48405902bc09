"""Normalizer: raw documents → extracted, cleaned, deduplicated, tokenized dataset parts."""
