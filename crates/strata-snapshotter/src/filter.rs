//! containerd's filter language, as far as snapshot listings use it: selectors
//! `FIELD==VALUE`, `FIELD!=VALUE` and `FIELD` (present), joined by `,` (all must match),
//! on `name`, `parent`, `kind` and `labels.KEY` / `labels."KEY"`. Values may be quoted.
//! containerd's metadata layer filters by label and parent when it looks for a snapshot
//! a remote snapshotter made (the fast path), and re-checks what it gets; `~=` (regex)
//! is accepted and matches everything, a superset the caller narrows.

use strata_store::{Info, Kind};

/// One filter expression: every selector must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter(Vec<Selector>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Selector {
    field: Field,
    op: Op,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    Name,
    Parent,
    Kind,
    Label(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Present,
    Equals(String),
    Differs(String),
    AnyValue,
}

impl Filter {
    /// Parses one expression.
    ///
    /// # Errors
    /// An unknown field or an unterminated quote, named in the message.
    pub fn parse(expr: &str) -> Result<Filter, String> {
        split_outside_quotes(expr, ',')?.iter().map(|s| Selector::parse(s.trim())).collect::<Result<_, _>>().map(Filter)
    }

    /// Whether `info` matches every selector.
    pub fn matches(&self, info: &Info) -> bool {
        self.0.iter().all(|s| s.matches(info))
    }
}

/// Whether `info` matches any of `filters` (all, when there are none).
pub(crate) fn any_matches(filters: &[Filter], info: &Info) -> bool {
    filters.is_empty() || filters.iter().any(|f| f.matches(info))
}

impl Selector {
    fn parse(s: &str) -> Result<Selector, String> {
        let (field, op) = match ["==", "!=", "~="].iter().find_map(|op| s.find(op).map(|at| (at, *op))) {
            None => (s, Op::Present),
            Some((at, op)) => {
                let value = unquote(s[at + 2..].trim())?;
                let op = match op {
                    "==" => Op::Equals(value),
                    "!=" => Op::Differs(value),
                    _ => Op::AnyValue,
                };
                (s[..at].trim(), op)
            }
        };
        let field = match field {
            "name" => Field::Name,
            "parent" => Field::Parent,
            "kind" => Field::Kind,
            _ => match field.strip_prefix("labels.") {
                Some(key) if !key.is_empty() => Field::Label(unquote(key)?),
                _ => return Err(format!("filter {s:?}: unknown field {field:?} (name, parent, kind, labels.KEY)")),
            },
        };
        Ok(Selector { field, op })
    }

    fn matches(&self, info: &Info) -> bool {
        let kind = match info.kind {
            Kind::Active => "active",
            Kind::View => "view",
            Kind::Committed => "committed",
        };
        let value: Option<&str> = match &self.field {
            Field::Name => Some(&info.key),
            Field::Parent => Some(info.parent.as_deref().unwrap_or("")),
            Field::Kind => Some(kind),
            Field::Label(key) => info.labels.get(key).map(String::as_str),
        };
        match &self.op {
            Op::Present => value.is_some_and(|v| !v.is_empty()),
            Op::Equals(want) => value == Some(want.as_str()),
            Op::Differs(want) => value != Some(want.as_str()),
            Op::AnyValue => true,
        }
    }
}

/// `"a\"b"` or `'a'` -> the text inside; anything else as is.
fn unquote(s: &str) -> Result<String, String> {
    let Some(quote) = s.chars().next().filter(|c| matches!(c, '"' | '\'')) else { return Ok(s.to_owned()) };
    let inner = s[1..].strip_suffix(quote).ok_or_else(|| format!("unterminated quote in {s:?}"))?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' { chars.next().ok_or_else(|| format!("dangling escape in {s:?}"))? } else { c });
    }
    Ok(out)
}

/// Splits on `sep` outside `"..."` and `'...'`.
fn split_outside_quotes(s: &str, sep: char) -> Result<Vec<String>, String> {
    let mut parts = vec![String::new()];
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        let part = parts.last_mut().expect("never empty");
        match (quote, c) {
            (Some(_), '\\') => {
                part.push(c);
                part.extend(chars.next());
            }
            (Some(q), c) if c == q => {
                part.push(c);
                quote = None;
            }
            (None, '"' | '\'') => {
                part.push(c);
                quote = Some(c);
            }
            (None, c) if c == sep => parts.push(String::new()),
            (_, c) => part.push(c),
        }
    }
    if quote.is_some() {
        return Err(format!("unterminated quote in filter {s:?}"));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn info(key: &str, parent: Option<&str>, labels: &[(&str, &str)]) -> Info {
        Info {
            key: key.into(),
            parent: parent.map(Into::into),
            kind: Kind::Committed,
            labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<BTreeMap<_, _>>(),
            created: 0,
            updated: 0,
            root_opaque: false,
        }
    }

    #[test]
    fn the_filter_containerd_uses_to_find_a_remote_snapshot() {
        // metadata/snapshot.go: labels."containerd.io/snapshot.ref"==%s,parent==%q
        let f = Filter::parse(r#"labels."containerd.io/snapshot.ref"==sha256:bb,parent=="default/4/sha256:aa""#)
            .expect("parses");
        let hit = info("sha256:bb", Some("default/4/sha256:aa"), &[("containerd.io/snapshot.ref", "sha256:bb")]);
        assert!(f.matches(&hit));
        assert!(!f.matches(&info("sha256:bb", Some("other"), &[("containerd.io/snapshot.ref", "sha256:bb")])));
        assert!(!f.matches(&info("sha256:bb", Some("default/4/sha256:aa"), &[])));
    }

    #[test]
    fn presence_inequality_kind_and_errors() {
        let i = info("k", None, &[("a", "1")]);
        assert!(Filter::parse("labels.a").expect("parses").matches(&i));
        assert!(!Filter::parse("labels.b").expect("parses").matches(&i));
        assert!(Filter::parse("kind==committed,name!=x").expect("parses").matches(&i));
        assert!(Filter::parse(r#"parent=="""#).expect("parses").matches(&i));
        assert!(any_matches(&[], &i));
        assert!(Filter::parse("size==3").expect_err("unknown").contains("size"));
        assert!(Filter::parse(r#"name=="open"#).is_err());
    }
}
