"""Data: annotation loaders, video frame planning and decoding, prompts, synthetic data."""
