use super::*;
/// Runs a TraceQL metrics query over a time range.
pub fn metrics_query_range(
    _reader: &dyn storage::read::TracesReader,
    query: &str,
    _start_ns: i64,
    _end_ns: i64,
    _step_ns: i64,
    _deadline: std::time::Instant,
) -> Result<Vec<MetricsSeries>, Error> {
    parse(query)?;
    Err(Error::Execution("not landed yet".into()))
}
