//! Architecture invariants that are cheap to check mechanically (rust-analyzer's `tidy.rs`):
//! the engines stay synchronous and network-free, and `storage` depends on no crate of ours.

use std::path::Path;

const ASYNC_OR_NETWORK: &[&str] = &["tokio", "axum", "tonic", "hyper", "tower", "tower-http", "reqwest"];
const OURS: &[&str] = &["outpost", "storage", "ingest", "query", "sample-app", "benches"];

fn deps(krate: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(krate).join("Cargo.toml");
    let manifest: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    let mut out = Vec::new();
    // Dev-dependencies count too: a test-only tokio in an engine crate invites async into it.
    for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
        if let Some(t) = manifest.get(section).and_then(|v| v.as_table()) {
            out.extend(t.keys().cloned());
        }
    }
    out
}

#[test]
fn engines_do_not_depend_on_async_or_network_crates() {
    for krate in ["storage", "ingest", "query"] {
        let bad: Vec<_> = deps(krate).into_iter().filter(|d| ASYNC_OR_NETWORK.contains(&d.as_str())).collect();
        assert!(bad.is_empty(), "{krate} must stay synchronous and network-free, but depends on {bad:?}");
    }
}

#[test]
fn storage_depends_on_no_crate_of_ours() {
    let bad: Vec<_> = deps("storage").into_iter().filter(|d| OURS.contains(&d.as_str())).collect();
    assert!(bad.is_empty(), "storage must not depend on {bad:?}");
}

#[test]
fn ingest_and_query_depend_only_on_storage_among_ours() {
    for krate in ["ingest", "query"] {
        let bad: Vec<_> = deps(krate).into_iter().filter(|d| OURS.contains(&d.as_str()) && d != "storage").collect();
        assert!(bad.is_empty(), "{krate} may depend on storage only among our crates, not {bad:?}");
    }
}
