//! Reading chosen rows of a Parquet file: the row groups that hold them and the row selection
//! over those groups' concatenated rows, shared by the traces and profiles engines.

use parquet::arrow::arrow_reader::RowSelector;

/// What to hand `ParquetRecordBatchReaderBuilder` to read the rows of `ranges`.
pub(crate) struct RowPlan {
    /// Row groups touched, ascending (`with_row_groups`).
    pub groups: Vec<usize>,
    /// The selection over the concatenated rows of `groups` (`with_row_selection`).
    pub selectors: Vec<RowSelector>,
    /// The selected row ranges, clipped to row-group bounds, in the order rows come out.
    pub selected: Vec<(u64, u64)>,
}

/// Plans reading the rows `ranges` (`[start, end)` row numbers of the file, sorted and
/// disjoint; empty ranges are ignored) of a file whose row group `g` holds rows
/// `starts[g]..starts[g + 1]` (`starts` ends with the row count).
pub(crate) fn plan<T: Copy + Into<u64>>(starts: &[T], ranges: &[(T, T)]) -> RowPlan {
    let starts: Vec<u64> = starts.iter().map(|&s| s.into()).collect();
    let ranges: Vec<(u64, u64)> = ranges.iter().map(|&(a, b)| (a.into(), b.into())).filter(|(a, b)| a < b).collect();
    let mut plan = RowPlan { groups: Vec::new(), selectors: Vec::new(), selected: Vec::new() };
    let num_groups = starts.len().saturating_sub(1);
    if num_groups == 0 {
        return plan;
    }
    for &(a, b) in &ranges {
        let first = starts.partition_point(|&s| s <= a).saturating_sub(1);
        let last = starts.partition_point(|&s| s < b).saturating_sub(1).min(num_groups - 1);
        plan.groups.extend(first..=last);
    }
    plan.groups.sort_unstable();
    plan.groups.dedup();
    for &g in &plan.groups {
        let (gs, ge) = (starts[g], starts[g + 1]);
        let mut at = gs;
        for &(a, b) in &ranges {
            let (a, b) = (a.max(at), b.min(ge));
            if a >= b {
                continue;
            }
            if a > at {
                plan.selectors.push(RowSelector::skip((a - at) as usize));
            }
            plan.selectors.push(RowSelector::select((b - a) as usize));
            plan.selected.push((a, b));
            at = b;
        }
        if ge > at {
            plan.selectors.push(RowSelector::skip((ge - at) as usize));
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selects_across_and_within_row_groups() {
        // Groups: [0, 10), [10, 20), [20, 25).
        let p = plan(&[0u64, 10, 20, 25], &[(2, 4), (8, 12), (30, 40), (5, 5)]);
        assert_eq!(p.groups, vec![0, 1]);
        assert_eq!(p.selected, vec![(2, 4), (8, 10), (10, 12)]);
        let sel: Vec<(bool, usize)> = p.selectors.iter().map(|s| (s.skip, s.row_count)).collect();
        assert_eq!(sel, vec![(true, 2), (false, 2), (true, 4), (false, 2), (false, 2), (true, 8)]);
        assert!(plan::<u32>(&[0], &[(0, 1)]).groups.is_empty());
    }
}
