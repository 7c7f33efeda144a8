//! What the suite's own mutant tests share: the cases a report shows failing to pass, and the
//! case × mutant matrix of confirmed catches.
#![allow(dead_code)]

use std::collections::BTreeMap;

use futures::StreamExt as _;
use iri_conformance::{Outcome, runner::RunReport};
use iri_mock::Mutant;

/// The cases of `report` that did not pass, as `id: outcome` lines.
pub(crate) fn not_passing(report: &RunReport) -> Vec<String> {
    report
        .results
        .iter()
        .filter(|r| r.outcome != Outcome::Passed)
        .map(|r| format!("{}: {:?}", r.id, r.outcome))
        .collect()
}

/// Per mutant of `mutants` (four at a time), the cases it makes fail twice: `failing(m, None)`
/// runs the cases against a fresh mock with mutant `m`, `failing(m, Some(ids))` re-runs the
/// failed ones against another; a catch counts only when the case fails both times.
pub(crate) async fn confirmed_catches<F, Fut>(
    mutants: &[Mutant],
    failing: F,
) -> Vec<(Mutant, Vec<String>)>
where
    F: Fn(Mutant, Option<Vec<String>>) -> Fut,
    Fut: Future<Output = Vec<String>>,
{
    let failing = &failing;
    futures::stream::iter(mutants.iter().copied())
        .map(|m| async move {
            let first = failing(m, None).await;
            let confirmed = if first.is_empty() {
                first
            } else {
                let again = failing(m, Some(first.clone())).await;
                first.into_iter().filter(|id| again.contains(id)).collect()
            };
            (m, confirmed)
        })
        .buffer_unordered(4)
        .collect()
        .await
}

/// The case × mutant matrix: every case id of `ids`, with the names (sorted) of the mutants
/// whose confirmed catches in `results` name it.
pub(crate) fn matrix(
    ids: impl IntoIterator<Item = String>,
    results: &[(Mutant, Vec<String>)],
) -> BTreeMap<String, Vec<&'static str>> {
    let mut matrix: BTreeMap<String, Vec<&'static str>> =
        ids.into_iter().map(|id| (id, Vec::new())).collect();
    for (m, failed) in results {
        for id in failed {
            matrix.get_mut(id).unwrap().push(m.name());
        }
    }
    for list in matrix.values_mut() {
        list.sort_unstable();
    }
    matrix
}

/// The case ids of `matrix` no mutant catches.
pub(crate) fn uncaught<'a>(matrix: &'a BTreeMap<String, Vec<&'static str>>) -> Vec<&'a String> {
    matrix
        .iter()
        .filter(|(_, ms)| ms.is_empty())
        .map(|(id, _)| id)
        .collect()
}
