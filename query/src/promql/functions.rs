//! Functions (being written).
use super::QueryError;
use super::eval::{Evaluator, Val};
pub(crate) fn eval_call(_ev: &Evaluator<'_>, _b: &promql_parser::parser::Call) -> Result<Val, QueryError> {
    Err(QueryError::Execution("functions not yet supported".into()))
}
