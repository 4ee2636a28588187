//! PromQL: evaluation of promql-parser's AST over `storage::MetricsReader`.
