//! Profile queries over `storage::ProfilesReader`, with Pyroscope's semantics:
//! - [`parse_selector`]: the PromQL-style label selectors Pyroscope takes (`{}` allowed);
//! - [`flamegraph`] / [`diff`]: merged stacks → Pyroscope's `FlameGraph` (names table plus levels
//!   of `[offset, total, self, name]` quadruples, offsets delta-encoded per level), with
//!   `max_nodes` truncation into `other` nodes;
//! - [`select_series`]: per-profile totals → time series on a step grid, grouped and aggregated;
//! - [`label_names`] / [`label_values`].
//!
//! Frames are function names: a location with inlined frames contributes one frame per line,
//! outermost first, as `go tool pprof` and Pyroscope show them.

use std::collections::{BTreeMap, HashMap};

use storage::model::Labels;
use storage::{MatchOp, Matcher, MergedStacks, ProfileSeries, ProfileTotals};

/// A query error (bad selector or parameter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError(pub String);

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for QueryError {}

/// Parses a label selector such as `{service_name="api", pod=~"a.*"}`; `""` and `{}` select all.
pub fn parse_selector(s: &str) -> Result<Vec<Matcher>, QueryError> {
    let t = s.trim();
    if t.is_empty() || t.chars().filter(|c| !c.is_whitespace()).collect::<String>() == "{}" {
        return Ok(Vec::new());
    }
    let expr = promql_parser::parser::parse(t).map_err(|e| QueryError(format!("invalid label selector {t:?}: {e}")))?;
    let promql_parser::parser::Expr::VectorSelector(vs) = expr else {
        return Err(QueryError(format!("invalid label selector {t:?}: expected {{name=\"value\", ...}}")));
    };
    if !vs.matchers.or_matchers.is_empty() {
        return Err(QueryError(format!("invalid label selector {t:?}: `or` is not supported")));
    }
    let mut out = Vec::new();
    if let Some(name) = vs.name {
        out.push(Matcher::eq("__name__", name));
    }
    for m in vs.matchers.matchers {
        let op = match m.op {
            promql_parser::label::MatchOp::Equal => MatchOp::Equal,
            promql_parser::label::MatchOp::NotEqual => MatchOp::NotEqual,
            promql_parser::label::MatchOp::Re(_) => MatchOp::Regex,
            promql_parser::label::MatchOp::NotRe(_) => MatchOp::NotRegex,
        };
        out.push(Matcher::new(m.name, op, m.value).map_err(|e| QueryError(format!("invalid regex: {e}")))?);
    }
    Ok(out)
}

/// Checks a profile type id has its five `:`-separated parts.
pub fn check_profile_type(id: &str) -> Result<(), QueryError> {
    if id.split(':').count() != 5 {
        return Err(QueryError(format!(
            "invalid profile type {id:?}: expected <name>:<sample type>:<sample unit>:<period type>:<period unit>"
        )));
    }
    Ok(())
}

/// Pyroscope's `FlameGraph`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlameGraph {
    /// Names; `names[0]` is `total`.
    pub names: Vec<String>,
    /// Levels of `[offset, total, self, name index]` quadruples (offsets delta-encoded).
    pub levels: Vec<Vec<i64>>,
    /// The root's total.
    pub total: i64,
    /// Largest self value.
    pub max_self: i64,
}

/// Pyroscope's `FlameGraphDiff`: levels of `[l_offset, l_total, l_self, r_offset, r_total,
/// r_self, name]` septuples.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlameGraphDiff {
    /// Names; `names[0]` is `total`.
    pub names: Vec<String>,
    /// Levels.
    pub levels: Vec<Vec<i64>>,
    /// Left plus right totals.
    pub total: i64,
    /// Largest self value on either side.
    pub max_self: i64,
    /// Left total.
    pub left_ticks: i64,
    /// Right total.
    pub right_ticks: i64,
}

#[derive(Clone, Debug)]
struct Node {
    name: u32,
    total: [i64; 2],
    self_: [i64; 2],
    children: Vec<usize>,
}

/// A call tree by function name; side 0 and 1 hold the left and right values of a diff.
struct Tree {
    names: Vec<String>,
    name_ids: HashMap<String, u32>,
    nodes: Vec<Node>,
    child_index: HashMap<(usize, u32), usize, BuildFx>,
}

/// A multiply-rotate hasher for the tree's small integer keys (SipHash costs several times more
/// per child lookup, the merge's inner loop). Keys are ours, not client input.
#[derive(Default, Clone, Copy)]
struct BuildFx;

#[derive(Default)]
struct Fx(u64);

impl std::hash::BuildHasher for BuildFx {
    type Hasher = Fx;
    fn build_hasher(&self) -> Fx {
        Fx(0)
    }
}

impl std::hash::Hasher for Fx {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Tree {
    fn new() -> Tree {
        let mut t = Tree {
            names: Vec::new(),
            name_ids: HashMap::new(),
            nodes: Vec::new(),
            child_index: HashMap::with_hasher(BuildFx),
        };
        let root = t.name("total");
        t.nodes.push(Node { name: root, total: [0; 2], self_: [0; 2], children: Vec::new() });
        t
    }

    fn name(&mut self, n: &str) -> u32 {
        if let Some(id) = self.name_ids.get(n) {
            return *id;
        }
        let id = self.names.len() as u32;
        self.names.push(n.to_string());
        self.name_ids.insert(n.to_string(), id);
        id
    }

    fn add(&mut self, merged: &MergedStacks, side: usize) {
        // Names of functions, resolved once.
        let fn_names: Vec<u32> = merged.functions.iter().map(|f| self.name(&f.name)).collect();
        let unknown = self.name("unknown");
        let mut frames: Vec<u32> = Vec::new();
        for (stack, value) in &merged.stacks {
            frames.clear();
            for &l in stack.iter().rev() {
                let Some(loc) = merged.locations.get(l as usize) else { continue };
                if loc.lines.is_empty() {
                    frames.push(unknown);
                }
                for (f, _) in loc.lines.iter().rev() {
                    frames.push(fn_names.get(*f as usize).copied().unwrap_or(unknown));
                }
            }
            let mut node = 0usize;
            self.nodes[0].total[side] += value;
            for &name in &frames {
                node = match self.child_index.get(&(node, name)) {
                    Some(c) => *c,
                    None => {
                        let c = self.nodes.len();
                        self.nodes.push(Node { name, total: [0; 2], self_: [0; 2], children: Vec::new() });
                        self.nodes[node].children.push(c);
                        self.child_index.insert((node, name), c);
                        c
                    }
                };
                self.nodes[node].total[side] += value;
            }
            self.nodes[node].self_[side] += value;
        }
    }

    /// Collapses nodes below the `max_nodes`-th largest total into one `other` child per parent.
    fn truncate(&mut self, max_nodes: usize) {
        if max_nodes == 0 || self.nodes.len() <= max_nodes {
            return;
        }
        let mut totals: Vec<i64> = self.nodes.iter().map(|n| n.total[0].max(n.total[1])).collect();
        totals.sort_unstable_by(|a, b| b.cmp(a));
        let min = totals[max_nodes - 1].max(1);
        let other = self.name("other");
        let mut stack = vec![0usize];
        while let Some(n) = stack.pop() {
            let children = std::mem::take(&mut self.nodes[n].children);
            let mut kept = Vec::with_capacity(children.len());
            let mut rest = [0i64; 2];
            for c in children {
                let node = &self.nodes[c];
                if node.total[0].max(node.total[1]) >= min {
                    kept.push(c);
                    stack.push(c);
                } else {
                    rest[0] += node.total[0];
                    rest[1] += node.total[1];
                }
            }
            if rest != [0, 0] {
                let c = self.nodes.len();
                self.nodes.push(Node { name: other, total: rest, self_: rest, children: Vec::new() });
                kept.push(c);
            }
            self.nodes[n].children = kept;
        }
    }

    /// Levels in depth-first, left-to-right order with absolute offsets per side.
    fn levels(&mut self) -> Vec<Vec<(usize, [i64; 2])>> {
        // Children ordered by name for a stable layout.
        for i in 0..self.nodes.len() {
            let mut ch = std::mem::take(&mut self.nodes[i].children);
            ch.sort_by(|a, b| self.names[self.nodes[*a].name as usize].cmp(&self.names[self.nodes[*b].name as usize]));
            self.nodes[i].children = ch;
        }
        let mut levels: Vec<Vec<(usize, [i64; 2])>> = Vec::new();
        let mut stack = vec![(0usize, 0usize, [0i64; 2])];
        while let Some((n, depth, offset)) = stack.pop() {
            if levels.len() <= depth {
                levels.push(Vec::new());
            }
            levels[depth].push((n, offset));
            let mut child_offset = offset;
            let mut pending = Vec::with_capacity(self.nodes[n].children.len());
            for &c in &self.nodes[n].children {
                pending.push((c, depth + 1, child_offset));
                child_offset[0] += self.nodes[c].total[0];
                child_offset[1] += self.nodes[c].total[1];
            }
            // Reverse so the leftmost child is visited first.
            stack.extend(pending.into_iter().rev());
        }
        levels
    }
}

/// Builds a flame graph of `merged`, keeping at most about `max_nodes` nodes (0: all).
///
/// The same tree as [`Tree`] builds, without a hash lookup per frame: stacks are sorted by their
/// root-first frame names, so a stack shares its prefix with the previous one and only the rest
/// creates nodes (children always after their parent, which makes totals one backward pass).
pub fn flamegraph(merged: &MergedStacks, max_nodes: usize) -> FlameGraph {
    // Names in the order `Tree` assigns them: total, the functions, unknown (then other).
    let mut names: Vec<String> = vec!["total".to_string()];
    // Function names are client input: a seeded hash (foldhash), not the tree's integer hasher.
    let mut name_ids: HashMap<&str, u32, foldhash::fast::RandomState> = HashMap::default();
    name_ids.insert("total", 0);
    let mut fn_names = Vec::with_capacity(merged.functions.len());
    for f in &merged.functions {
        let next = names.len() as u32;
        let id = *name_ids.entry(f.name.as_str()).or_insert_with(|| {
            names.push(f.name.clone());
            next
        });
        fn_names.push(id);
    }
    let unknown = match name_ids.get("unknown") {
        Some(id) => *id,
        None => {
            names.push("unknown".to_string());
            names.len() as u32 - 1
        }
    };
    // Each location's frame names (outermost first), resolved once: `loc_names[loc_starts[l]..
    // loc_starts[l + 1]]`.
    let mut loc_names: Vec<u32> = Vec::new();
    let mut loc_starts: Vec<u32> = Vec::with_capacity(merged.locations.len() + 1);
    for loc in &merged.locations {
        loc_starts.push(loc_names.len() as u32);
        if loc.lines.is_empty() {
            loc_names.push(unknown);
        }
        for (f, _) in loc.lines.iter().rev() {
            loc_names.push(fn_names.get(*f as usize).copied().unwrap_or(unknown));
        }
    }
    loc_starts.push(loc_names.len() as u32);
    // Root-first frames of every stack, flattened.
    let mut frames: Vec<u32> = Vec::new();
    let mut starts: Vec<usize> = Vec::with_capacity(merged.stacks.len() + 1);
    for (stack, _) in &merged.stacks {
        starts.push(frames.len());
        for &l in stack.iter().rev() {
            // Unknown location ids are skipped.
            if let (Some(&a), Some(&b)) = (loc_starts.get(l as usize), loc_starts.get(l as usize + 1)) {
                frames.extend_from_slice(&loc_names[a as usize..b as usize]);
            }
        }
    }
    starts.push(frames.len());
    let frames_of = |i: usize| &frames[starts[i]..starts[i + 1]];
    let mut order: Vec<usize> = (0..merged.stacks.len()).collect();
    order.sort_unstable_by(|a, b| frames_of(*a).cmp(frames_of(*b)));
    // Nodes: parent, name, self; node 0 is the root.
    let mut parent: Vec<u32> = vec![0];
    let mut name_of: Vec<u32> = vec![0];
    let mut self_: Vec<i64> = vec![0];
    let mut path: Vec<u32> = Vec::new();
    let mut prev: &[u32] = &[];
    for i in order {
        let f = frames_of(i);
        let common = f.iter().zip(prev).take_while(|(a, b)| a == b).count();
        path.truncate(common);
        for &name in &f[common..] {
            let id = parent.len() as u32;
            parent.push(path.last().copied().unwrap_or(0));
            name_of.push(name);
            self_.push(0);
            path.push(id);
        }
        let leaf = path.last().copied().unwrap_or(0) as usize;
        self_[leaf] += merged.stacks[i].1;
        prev = f;
    }
    let n = parent.len();
    let mut total = self_.clone();
    for c in (1..n).rev() {
        total[parent[c] as usize] += total[c];
    }
    // Truncation: as `Tree::truncate`, nodes under the `max_nodes`-th largest total fold into one
    // `other` child per kept parent. Kept nodes get a slot (root first); only they get children
    // lists, so a large tree cut to a few thousand nodes allocates little beyond its arrays.
    const DROPPED: u32 = u32::MAX;
    let mut slot: Vec<u32> = vec![DROPPED; n];
    let mut kept: Vec<usize> = Vec::new(); // slot → node
    let mut rest: Vec<i64> = Vec::new(); // slot → total of dropped children
    let mut other = 0;
    let min = if max_nodes != 0 && n > max_nodes {
        let mut keys: Vec<i64> = total.iter().map(|t| (*t).max(0)).collect();
        let (_, nth, _) = keys.select_nth_unstable_by(max_nodes - 1, |a, b| b.cmp(a));
        other = match name_ids.get("other") {
            Some(id) => *id,
            None => {
                names.push("other".to_string());
                names.len() as u32 - 1
            }
        };
        Some((*nth).max(1))
    } else {
        None
    };
    slot[0] = 0;
    kept.push(0);
    rest.push(0);
    for c in 1..n {
        let p = slot[parent[c] as usize];
        if p == DROPPED {
            continue;
        }
        if min.is_none_or(|m| total[c].max(0) >= m) {
            slot[c] = kept.len() as u32;
            kept.push(c);
            rest.push(0);
        } else {
            rest[p as usize] += total[c];
        }
    }
    let mut extra: Vec<(u32, i64)> = Vec::new(); // (parent slot, total) of `other` nodes
    for (p, r) in rest.iter().enumerate() {
        if *r != 0 {
            extra.push((p as u32, *r));
        }
    }
    // Children lists of kept nodes by slot (then the `other` nodes, slots kept.len()..), by name.
    let k = kept.len();
    let all = k + extra.len();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); all];
    for &c in &kept[1..] {
        children[slot[parent[c] as usize] as usize].push(slot[c] as usize);
    }
    for (e, (p, _)) in extra.iter().enumerate() {
        children[*p as usize].push(k + e);
    }
    let node_name = |c: usize| if c < k { name_of[kept[c]] } else { other };
    let node_total = |c: usize| if c < k { total[kept[c]] } else { extra[c - k].1 };
    let node_self = |c: usize| if c < k { self_[kept[c]] } else { extra[c - k].1 };
    for ch in &mut children {
        ch.sort_by(|a, b| names[node_name(*a) as usize].cmp(&names[node_name(*b) as usize]));
    }
    let mut out = FlameGraph { total: total[0], ..FlameGraph::default() };
    let mut levels: Vec<Vec<(usize, i64)>> = Vec::new();
    let mut stack = vec![(0usize, 0usize, 0i64)];
    while let Some((node, depth, offset)) = stack.pop() {
        if levels.len() <= depth {
            levels.push(Vec::new());
        }
        levels[depth].push((node, offset));
        let mut child_offset = offset;
        let mut pending = Vec::with_capacity(children[node].len());
        for &c in &children[node] {
            pending.push((c, depth + 1, child_offset));
            child_offset += node_total(c);
        }
        stack.extend(pending.into_iter().rev());
    }
    for level in levels {
        let mut prev_end = 0i64;
        let mut values = Vec::with_capacity(level.len() * 4);
        for (node, offset) in level {
            values.extend([offset - prev_end, node_total(node), node_self(node), i64::from(node_name(node))]);
            prev_end = offset + node_total(node);
            out.max_self = out.max_self.max(node_self(node));
        }
        out.levels.push(values);
    }
    out.names = names;
    out
}

/// [`flamegraph`] through [`Tree`], the reference the fast path is checked against.
#[cfg(test)]
fn flamegraph_by_tree(merged: &MergedStacks, max_nodes: usize) -> FlameGraph {
    let mut tree = Tree::new();
    tree.add(merged, 0);
    tree.truncate(max_nodes);
    let levels = tree.levels();
    let mut out = FlameGraph { total: tree.nodes[0].total[0], ..FlameGraph::default() };
    for level in levels {
        let mut prev_end = 0i64;
        let mut values = Vec::with_capacity(level.len() * 4);
        for (n, offset) in level {
            let node = &tree.nodes[n];
            values.extend([offset[0] - prev_end, node.total[0], node.self_[0], i64::from(node.name)]);
            prev_end = offset[0] + node.total[0];
            out.max_self = out.max_self.max(node.self_[0]);
        }
        out.levels.push(values);
    }
    out.names = tree.names;
    out
}

/// Builds a diff flame graph of `left` against `right`.
pub fn diff(left: &MergedStacks, right: &MergedStacks, max_nodes: usize) -> FlameGraphDiff {
    let mut tree = Tree::new();
    tree.add(left, 0);
    tree.add(right, 1);
    tree.truncate(max_nodes);
    let levels = tree.levels();
    let root = &tree.nodes[0];
    let mut out = FlameGraphDiff {
        total: root.total[0] + root.total[1],
        left_ticks: root.total[0],
        right_ticks: root.total[1],
        ..FlameGraphDiff::default()
    };
    for level in levels {
        let mut prev_end = [0i64; 2];
        let mut values = Vec::with_capacity(level.len() * 7);
        for (n, offset) in level {
            let node = &tree.nodes[n];
            values.extend([
                offset[0] - prev_end[0],
                node.total[0],
                node.self_[0],
                offset[1] - prev_end[1],
                node.total[1],
                node.self_[1],
                i64::from(node.name),
            ]);
            prev_end = [offset[0] + node.total[0], offset[1] + node.total[1]];
            out.max_self = out.max_self.max(node.self_[0]).max(node.self_[1]);
        }
        out.levels.push(values);
    }
    out.names = tree.names;
    out
}

/// Self value per function name (what `go tool pprof -top` calls flat), from a flame graph.
pub fn self_by_function(fg: &FlameGraph) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for level in fg.levels.iter().skip(1) {
        for q in level.chunks(4) {
            if q.len() == 4 && q[2] != 0 {
                *out.entry(fg.names[q[3] as usize].clone()).or_default() += q[2];
            }
        }
    }
    out
}

/// How points of a step are combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggregation {
    /// Sum of the profiles' totals.
    Sum,
    /// Their average.
    Average,
}

/// One output series of [`select_series`].
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The `group_by` labels (all of them missing → empty).
    pub labels: Vec<(String, String)>,
    /// `(timestamp ms, value)` on the step grid.
    pub points: Vec<(i64, f64)>,
}

/// Per-profile totals → series on the grid `start_ms, start_ms + step, ...` (a point at `T` sums
/// the profiles in `(T - step, T]`), grouped by `group_by`, optionally the top `limit` by total.
pub fn select_series(
    totals: &ProfileTotals,
    start_ms: i64,
    end_ms: i64,
    step_s: f64,
    group_by: &[String],
    aggregation: Aggregation,
    limit: Option<usize>,
) -> Result<Vec<Series>, QueryError> {
    if !(step_s.is_finite() && step_s > 0.0) {
        return Err(QueryError(format!("invalid step {step_s}: must be a positive number of seconds")));
    }
    let step_ms = ((step_s * 1000.0) as i64).max(1);
    if (end_ms - start_ms) / step_ms > 11_000 {
        return Err(QueryError(format!(
            "exceeded maximum resolution of 11,000 points per timeseries; try decreasing the query resolution (step={step_s}s)"
        )));
    }
    let key_of = |s: &ProfileSeries| -> Vec<(String, String)> {
        group_by.iter().filter_map(|g| s.labels.get(g).map(|v| (g.clone(), v.to_string()))).collect()
    };
    // group key → bucket → (sum, count)
    type Buckets = BTreeMap<i64, (f64, u64)>;
    let mut groups: BTreeMap<Vec<(String, String)>, Buckets> = BTreeMap::new();
    for &(series, t_ns, total, _) in &totals.points {
        let Some(s) = totals.series.get(series as usize) else { continue };
        let t_ms = t_ns.div_euclid(1_000_000);
        if t_ms < start_ms || t_ms > end_ms {
            continue;
        }
        let idx = (t_ms - start_ms + step_ms - 1).div_euclid(step_ms);
        let bucket = start_ms + idx * step_ms;
        let e = groups.entry(key_of(s)).or_default().entry(bucket).or_default();
        e.0 += total as f64;
        e.1 += 1;
    }
    let mut out: Vec<(f64, Series)> = groups
        .into_iter()
        .map(|(labels, buckets)| {
            let points: Vec<(i64, f64)> = buckets
                .into_iter()
                .map(|(t, (sum, n))| (t, if aggregation == Aggregation::Average { sum / n as f64 } else { sum }))
                .collect();
            (points.iter().map(|p| p.1).sum(), Series { labels, points })
        })
        .collect();
    if let Some(limit) = limit.filter(|l| *l > 0) {
        out.sort_by(|a, b| b.0.total_cmp(&a.0));
        out.truncate(limit);
        out.sort_by(|a, b| a.1.labels.cmp(&b.1.labels));
    }
    Ok(out.into_iter().map(|(_, s)| s).collect())
}

/// Label names of the series, sorted (synthetic `__` names included, as Pyroscope returns them).
pub fn label_names(series: &[ProfileSeries]) -> Vec<String> {
    let mut names: Vec<String> = series.iter().flat_map(|s| s.labels.iter().map(|l| l.name.clone())).collect();
    names.sort();
    names.dedup();
    names
}

/// Values of label `name` over the series, sorted.
pub fn label_values(series: &[ProfileSeries], name: &str) -> Vec<String> {
    let mut values: Vec<String> = series.iter().filter_map(|s| s.labels.get(name).map(str::to_string)).collect();
    values.sort();
    values.dedup();
    values
}

/// The distinct label sets of the series restricted to `names` (all labels when empty).
pub fn series_labels(series: &[ProfileSeries], names: &[String]) -> Vec<Labels> {
    let mut out: Vec<Labels> = series
        .iter()
        .map(|s| {
            if names.is_empty() {
                s.labels.clone()
            } else {
                Labels::from_pairs(
                    s.labels.iter().filter(|l| names.contains(&l.name)).map(|l| (l.name.clone(), l.value.clone())),
                )
            }
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests;
