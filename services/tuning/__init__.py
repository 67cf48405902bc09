"""Fine-tuning: the built-in tiny base model, snapshots, training, evaluation, gating."""
