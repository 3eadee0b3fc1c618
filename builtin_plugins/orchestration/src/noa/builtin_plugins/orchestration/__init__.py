"""NOA orchestration plugin: durable tasks run by workers through the broker, with
retries, dead letters and backpressure (no side effects on import)."""
