//! TraceQL: parser and evaluation over `storage::TracesReader`.
