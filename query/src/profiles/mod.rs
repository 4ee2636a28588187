//! Profile queries: flame graphs, series, span profiles, diffs over `storage::ProfilesReader`.
