//! The query string of a list or watch request, and label selectors.
//!
//! kube builds its query strings with `form_urlencoded` on top of `path?`, which yields
//! `path?&labelSelector=...` when the first pair is appended: empty pairs are skipped here, as
//! the real API server skips them.

use std::collections::BTreeMap;

/// The parameters of a list or watch request that the fake server understands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// `watch=true` (or `1`).
    pub watch: bool,
    /// `resourceVersion`, as given (`None` when absent).
    pub resource_version: Option<String>,
    /// `resourceVersionMatch`.
    pub resource_version_match: Option<String>,
    /// `labelSelector`, parsed.
    pub label_selector: Option<LabelSelector>,
    /// `limit`; `0` or absent means no limit.
    pub limit: Option<usize>,
    /// `continue`.
    pub continue_token: Option<String>,
    /// `timeoutSeconds`.
    pub timeout_seconds: Option<u64>,
    /// `allowWatchBookmarks=true`.
    pub allow_bookmarks: bool,
    /// `sendInitialEvents=true`.
    pub send_initial_events: bool,
}

/// A query parameter the server cannot use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadQuery(pub String);

impl Query {
    /// Parses a raw query string (without the `?`).
    pub fn parse(raw: &str) -> Result<Query, BadQuery> {
        let mut query = Query::default();
        for (key, value) in form_urlencoded::parse(raw.as_bytes()) {
            if key.is_empty() {
                continue;
            }
            match &*key {
                "watch" => query.watch = value == "true" || value == "1",
                "resourceVersion" => query.resource_version = Some(value.into_owned()),
                "resourceVersionMatch" => query.resource_version_match = Some(value.into_owned()),
                "labelSelector" => {
                    query.label_selector = Some(
                        LabelSelector::parse(&value)
                            .map_err(|e| BadQuery(format!("labelSelector: {e}")))?,
                    );
                }
                "limit" => {
                    let limit: usize = value
                        .parse()
                        .map_err(|_| BadQuery(format!("limit `{value}` is not a number")))?;
                    query.limit = (limit > 0).then_some(limit);
                }
                "continue" => query.continue_token = Some(value.into_owned()),
                "timeoutSeconds" => {
                    query.timeout_seconds = Some(value.parse().map_err(|_| {
                        BadQuery(format!("timeoutSeconds `{value}` is not a number"))
                    })?);
                }
                "allowWatchBookmarks" => query.allow_bookmarks = value == "true",
                "sendInitialEvents" => query.send_initial_events = value == "true",
                // Accepted and ignored, as the fields a real server would not need here.
                _ => {}
            }
        }
        Ok(query)
    }

    /// The numeric resourceVersion, when one other than `""` and `"0"` was given.
    pub fn exact_resource_version(&self) -> Result<Option<u64>, BadQuery> {
        match self.resource_version.as_deref() {
            None | Some("") | Some("0") => Ok(None),
            Some(rv) => rv
                .parse()
                .map(Some)
                .map_err(|_| BadQuery(format!("resourceVersion `{rv}` is not a number"))),
        }
    }
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value` or `key==value`.
    Equals(String, String),
    /// `key!=value` (also true when the label is absent).
    NotEquals(String, String),
    /// `key`: the label exists.
    Exists(String),
    /// `!key`: the label does not exist.
    NotExists(String),
    /// `key in (a,b)`: the label is one of the values.
    In(String, Vec<String>),
    /// `key notin (a,b)`: the label is none of the values (also true when it is absent).
    NotIn(String, Vec<String>),
}

/// A parsed label selector: all requirements must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses `a=b,c!=d,e,!f,g in (h,i),j notin (k)`, as the API server does.
    pub fn parse(raw: &str) -> Result<LabelSelector, String> {
        let mut requirements = Vec::new();
        for part in split_outside_parentheses(raw)?
            .into_iter()
            .map(str::trim)
            .filter(|part| !part.is_empty())
        {
            let requirement = if let Some((key, values)) = set_based(part, " notin ")? {
                Requirement::NotIn(key, values)
            } else if let Some((key, values)) = set_based(part, " in ")? {
                Requirement::In(key, values)
            } else if let Some((key, value)) = part.split_once("!=") {
                Requirement::NotEquals(key.trim().into(), value.trim().into())
            } else if let Some((key, value)) = part.split_once("==") {
                Requirement::Equals(key.trim().into(), value.trim().into())
            } else if let Some((key, value)) = part.split_once('=') {
                Requirement::Equals(key.trim().into(), value.trim().into())
            } else if let Some(key) = part.strip_prefix('!') {
                Requirement::NotExists(key.trim().into())
            } else if part.contains(' ') || part.contains('(') {
                return Err(format!("unsupported requirement `{part}`"));
            } else {
                Requirement::Exists(part.into())
            };
            requirements.push(requirement);
        }
        Ok(LabelSelector { requirements })
    }

    /// Whether an object with these labels is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements
            .iter()
            .all(|requirement| match requirement {
                Requirement::Equals(key, value) => labels.get(key) == Some(value),
                Requirement::NotEquals(key, value) => labels.get(key) != Some(value),
                Requirement::Exists(key) => labels.contains_key(key),
                Requirement::NotExists(key) => !labels.contains_key(key),
                Requirement::In(key, values) => labels.get(key).is_some_and(|v| values.contains(v)),
                Requirement::NotIn(key, values) => {
                    labels.get(key).is_none_or(|v| !values.contains(v))
                }
            })
    }
}

/// Splits a selector at the commas that separate requirements (not the ones in a value set).
fn split_outside_parentheses(raw: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (index, character) in raw.char_indices() {
        match character {
            '(' => depth += 1,
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| format!("unbalanced `)` in `{raw}`"))?;
            }
            ',' if depth == 0 => {
                parts.push(&raw[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("unbalanced `(` in `{raw}`"));
    }
    parts.push(&raw[start..]);
    Ok(parts)
}

/// `key OPERATOR (a,b)`, when `part` has that operator.
fn set_based(part: &str, operator: &str) -> Result<Option<(String, Vec<String>)>, String> {
    let Some((key, values)) = part.split_once(operator) else {
        return Ok(None);
    };
    let values = values
        .trim()
        .strip_prefix('(')
        .and_then(|values| values.strip_suffix(')'))
        .ok_or_else(|| format!("the values of `{part}` are not in parentheses"))?;
    let values = values
        .split(',')
        .map(|value| value.trim().to_owned())
        .collect();
    Ok(Some((key.trim().to_owned(), values)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_query_strings_parse_with_the_leading_empty_pair() {
        let query = Query::parse(
            "&watch=true&timeoutSeconds=290&labelSelector=kubernetes.io%2Fservice-name%3Dapi\
             &allowWatchBookmarks=true&resourceVersion=42",
        )
        .unwrap();
        assert!(query.watch);
        assert!(query.allow_bookmarks);
        assert_eq!(query.timeout_seconds, Some(290));
        assert_eq!(query.exact_resource_version().unwrap(), Some(42));
        let selector = query.label_selector.unwrap();
        let labels = BTreeMap::from([("kubernetes.io/service-name".into(), "api".into())]);
        assert!(selector.matches(&labels));
        assert!(!selector.matches(&BTreeMap::new()));
    }

    #[test]
    fn selectors_support_equality_inequality_and_existence() {
        let selector = LabelSelector::parse("a=1, b==2,c!=3,d,!e").unwrap();
        let mut labels: BTreeMap<String, String> = [("a", "1"), ("b", "2"), ("d", "")]
            .map(|(k, v)| (k.into(), v.into()))
            .into();
        assert!(selector.matches(&labels));
        labels.insert("c".into(), "3".into());
        assert!(!selector.matches(&labels));
        labels.insert("c".into(), "4".into());
        assert!(selector.matches(&labels));
        labels.insert("e".into(), "x".into());
        assert!(!selector.matches(&labels));
        assert!(LabelSelector::parse("a in (b").is_err());
        assert!(LabelSelector::parse("a in b").is_err());
    }

    #[test]
    fn set_based_selectors_keep_their_value_lists_whole() {
        let selector = LabelSelector::parse("s in (a, b),t notin (c),u").unwrap();
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert!(selector.matches(&labels(&[("s", "a"), ("u", "")])));
        assert!(selector.matches(&labels(&[("s", "b"), ("t", "d"), ("u", "")])));
        assert!(!selector.matches(&labels(&[("s", "c"), ("u", "")])));
        assert!(!selector.matches(&labels(&[("s", "a"), ("t", "c"), ("u", "")])));
        assert!(!selector.matches(&labels(&[("s", "a")])));
    }

    #[test]
    fn bad_numbers_are_rejected() {
        assert!(Query::parse("limit=x").is_err());
        assert!(
            Query::parse("resourceVersion=abc")
                .unwrap()
                .exact_resource_version()
                .is_err()
        );
        assert_eq!(Query::parse("limit=0").unwrap().limit, None);
    }
}
