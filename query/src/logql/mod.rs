//! LogQL: parser and evaluation over `storage::LogsReader`.
