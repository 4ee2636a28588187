use super::*;
/// Runs a TraceQL search.
pub fn search(
    _reader: &dyn storage::read::TracesReader,
    req: &SearchRequest,
    _deadline: std::time::Instant,
) -> Result<SearchResponse, Error> {
    parse(&req.query)?;
    Err(Error::Execution("not landed yet".into()))
}
