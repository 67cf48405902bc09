"""afina services and the contracts they share."""
