//! Label-selector matching as IronCore's runtimes do it: Kubernetes `SelectorFromSet` equality.
//!
//! Every key of the selector must be present in the labels with an equal value (an empty-string
//! value therefore requires the key to be present). An empty selector matches everything.

use std::{borrow::Borrow, collections::HashMap, hash::BuildHasher};

/// Whether `labels` satisfy the equality `selector`.
pub fn matches<S1, S2>(
    selector: &HashMap<String, String, S1>,
    labels: &HashMap<String, String, S2>,
) -> bool
where
    S1: BuildHasher,
    S2: BuildHasher,
{
    selector
        .iter()
        .all(|(key, want)| labels.get(key.as_str()).is_some_and(|have| have == want))
}

/// Like [`matches`], for any iterator of selector pairs and a lookup into labels.
pub fn matches_with<'a, I, K, V>(selector: I, lookup: impl Fn(&str) -> Option<&'a str>) -> bool
where
    I: IntoIterator<Item = (K, V)>,
    K: Borrow<str>,
    V: Borrow<str>,
{
    selector
        .into_iter()
        .all(|(key, want)| lookup(key.borrow()) == Some(want.borrow()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[rstest]
    #[case::empty_selector_matches_empty_labels(&[], &[], true)]
    #[case::empty_selector_matches_anything(&[], &[("a", "1")], true)]
    #[case::equal(&[("a", "1")], &[("a", "1"), ("b", "2")], true)]
    #[case::all_keys(&[("a", "1"), ("b", "2")], &[("a", "1"), ("b", "2")], true)]
    #[case::one_key_differs(&[("a", "1"), ("b", "3")], &[("a", "1"), ("b", "2")], false)]
    #[case::missing_key(&[("c", "1")], &[("a", "1")], false)]
    #[case::empty_value_requires_presence(&[("a", "")], &[], false)]
    #[case::empty_value_present(&[("a", "")], &[("a", "")], true)]
    #[case::case_sensitive(&[("a", "X")], &[("a", "x")], false)]
    fn equality_selector(
        #[case] selector: &[(&str, &str)],
        #[case] labels: &[(&str, &str)],
        #[case] want: bool,
    ) {
        let (selector, labels) = (map(selector), map(labels));
        assert_eq!(matches(&selector, &labels), want);
        assert_eq!(
            matches_with(
                selector.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                |k| labels.get(k).map(String::as_str)
            ),
            want
        );
    }
}
