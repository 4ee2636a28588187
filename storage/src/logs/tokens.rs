//! The body tokenizer and the rule that turns a substring hint into index terms.
//!
//! Invariant: a term is required for a hint only when every line containing the hint is certain to
//! contain that term as a whole token. Tokens are maximal runs of `char::is_alphanumeric`
//! characters (tantivy's `SimpleTokenizer`), kept case-sensitive, and tokens of
//! [`MAX_TOKEN_BYTES`] bytes or more are not indexed. A run inside the hint that has a
//! non-alphanumeric character on both sides (within the hint) is such a token; runs touching the
//! hint's start or end may continue in the line, so they are never required.

use tantivy::tokenizer::{RemoveLongFilter, SimpleTokenizer, TextAnalyzer};

/// Name the body tokenizer is registered under in every partition index.
pub(super) const TOKENIZER: &str = "outpost_body";

/// Tokens this long (bytes) or longer are dropped from the index. Such tokens are mostly ids
/// (hex trace and span ids, hashes, tokens) that are unique per line: indexing them would double
/// the term dictionary and its build time for searches that are rare (trace ids have their own
/// field). A line filter on one still works, by scanning.
pub(super) const MAX_TOKEN_BYTES: usize = 16;

/// The body analyzer: alphanumeric runs, case kept, long tokens dropped.
pub(super) fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default()).filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES)).build()
}

/// Tokens every line containing `hint` must hold (see the module invariant); possibly none.
pub(super) fn required_tokens(hint: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut run_start: Option<usize> = None;
    // True once a non-alphanumeric character has been seen: a run after it starts on a boundary.
    let mut bounded_left = false;
    for (i, c) in hint.char_indices() {
        if c.is_alphanumeric() {
            if run_start.is_none() {
                run_start = Some(i);
            }
        } else {
            if let Some(s) = run_start.take()
                && bounded_left
            {
                let tok = &hint[s..i];
                if tok.len() < MAX_TOKEN_BYTES && !out.contains(&tok) {
                    out.push(tok);
                }
            }
            bounded_left = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_interior_runs_are_required() {
        assert_eq!(required_tokens("error"), Vec::<&str>::new());
        assert_eq!(required_tokens("level=error"), Vec::<&str>::new());
        assert_eq!(required_tokens("level=error "), vec!["error"]);
        assert_eq!(required_tokens(" GET /api/v1 "), vec!["GET", "api", "v1"]);
        assert_eq!(required_tokens("a b a b"), vec!["b", "a"]);
        assert_eq!(required_tokens("[é1] x"), vec!["é1"]);
        let long = format!(" {} ", "x".repeat(MAX_TOKEN_BYTES));
        assert_eq!(required_tokens(&long), Vec::<&str>::new());
    }

    #[test]
    fn analyzer_matches_the_rule() {
        let mut a = analyzer();
        let mut toks = Vec::new();
        let mut s = a.token_stream("x GET /api/v1 Ünï-9");
        while let Some(t) = s.next() {
            toks.push(t.text.clone());
        }
        assert_eq!(toks, vec!["x", "GET", "api", "v1", "Ünï", "9"]);
    }
}
