"""The inference service: gRPC generation from the champion model, hot-swapped on promotion."""
