"""The retrieval path: passages of every document, embedded and indexed for hybrid search."""
