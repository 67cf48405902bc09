"""The demo's sample documents, and corpus.py: documents made on the fly for the tests and benchmarks."""
