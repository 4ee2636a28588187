//! Binary operators (being written).
use super::QueryError;
use super::eval::{Evaluator, Val};
pub(crate) fn eval_binary(_ev: &Evaluator<'_>, _b: &promql_parser::parser::BinaryExpr) -> Result<Val, QueryError> {
    Err(QueryError::Execution("binary operators not yet supported".into()))
}
