"""The bridge between Temporal, Kafka and ClickHouse: emission, the ledger sink, topics."""
