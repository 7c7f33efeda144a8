//! What the suite's own mutant tests share: the cases a report shows failing to pass, and the
//! case × mutant matrix of confirmed catches.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

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

/// What one run against a mutant gave: every selected case's id with its outcome.
pub(crate) type Outcomes = BTreeMap<String, Outcome>;

/// The outcomes of `report`, by case id.
pub(crate) fn outcomes(report: &RunReport) -> Outcomes {
    report
        .results
        .iter()
        .map(|r| (r.id.clone(), r.outcome.clone()))
        .collect()
}

fn failed(outcomes: &Outcomes) -> BTreeSet<&str> {
    outcomes
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Failed(_)))
        .map(|(id, _)| id.as_str())
        .collect()
}

/// Per mutant of `mutants` (four at a time), the cases it catches, by a majority of three runs:
/// `run(m, None)` runs the cases against a fresh mock with mutant `m`, twice; a case that failed
/// in one run and not the other is run a third time alone (`run(m, Some(ids))`, another fresh
/// mock) and that run decides. Each such split is printed with the outcomes behind it, so that
/// a catch that depends on timing shows what the case saw when it was missed.
pub(crate) async fn confirmed_catches<F, Fut>(
    mutants: &[Mutant],
    run: F,
) -> Vec<(Mutant, Vec<String>)>
where
    F: Fn(Mutant, Option<Vec<String>>) -> Fut,
    Fut: Future<Output = Outcomes>,
{
    let run = &run;
    futures::stream::iter(mutants.iter().copied())
        .map(|m| async move {
            let (first, second) = (run(m, None).await, run(m, None).await);
            let (a, b) = (failed(&first), failed(&second));
            let split: Vec<String> = a
                .symmetric_difference(&b)
                .map(|id| (*id).to_owned())
                .collect();
            let third = if split.is_empty() {
                Outcomes::new()
            } else {
                run(m, Some(split.clone())).await
            };
            for id in &split {
                let show =
                    |o: &Outcomes| o.get(id).map_or("not run".to_owned(), |o| format!("{o:?}"));
                println!(
                    "split catch: {id} under {}: {} / {} / third run {}",
                    m.name(),
                    show(&first),
                    show(&second),
                    show(&third)
                );
            }
            // The third run selects only split cases.
            let caught = a
                .intersection(&b)
                .chain(&failed(&third))
                .map(|id| (*id).to_owned())
                .collect::<BTreeSet<String>>();
            (m, caught.into_iter().collect())
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
