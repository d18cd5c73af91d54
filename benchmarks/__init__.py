"""Speed benchmarks against the Model Garden; run each as `python -m benchmarks.<name>`."""
