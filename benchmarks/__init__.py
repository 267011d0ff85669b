"""make bench: transport, engines and end-to-end stream benchmarks (python -m benchmarks)."""
