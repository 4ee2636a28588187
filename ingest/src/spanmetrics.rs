//! Span metrics and the service graph, derived from spans at ingest under Tempo's names.
