"""Reports: run records and comparisons rendered as Markdown (step summaries, PR comments)."""
