"""Prefect flows of afina: snapshot, fine-tune, evaluate, gate and promote (see the tuning issue)."""
