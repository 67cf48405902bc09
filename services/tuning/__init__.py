"""Fine-tuning: the built-in tiny base model, a run's data, training, evaluation, the gate, lineage and promotion."""
