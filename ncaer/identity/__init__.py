"""Who appears in a dataset: face identity embeddings and actor clusters across clips."""
