//! Aggregations (being written).
use super::QueryError;
use super::eval::{Evaluator, Val};
pub(crate) fn eval_aggregate(
    _ev: &Evaluator<'_>,
    _b: &promql_parser::parser::AggregateExpr,
) -> Result<Val, QueryError> {
    Err(QueryError::Execution("aggregations not yet supported".into()))
}
