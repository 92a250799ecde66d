"""Store adapters: Redis as the shared state, a local cache kept fresh by pub/sub."""
