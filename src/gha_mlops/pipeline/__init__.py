"""The pipeline engine: hashing, the content-addressed cache, stage execution, run records."""
