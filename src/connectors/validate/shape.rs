//! The file's shape: TOML syntax and serde's view of the format. Every unknown,
//! ill-typed or missing key is reported with its path, not just the first.

use super::*;

/// `a.b[0].c`, or empty for the whole file.
pub(super) fn display_path(path: &serde_path_to_error::Path) -> String {
    let path = path.to_string();
    if path == "." { String::new() } else { path }
}

/// The path of the key a serde error is about, as segments and as text. Inside a
/// tagged table (`auth`, `paging`) an unknown key's path stops at the table, so the
/// key named in the message is added.
pub(super) fn offending_key(
    path: &serde_path_to_error::Path,
    message: &str,
) -> (Vec<Segment>, String) {
    let mut segments: Vec<Segment> = path.iter().cloned().collect();
    let mut shown = display_path(path);
    if message.starts_with("unknown field")
        && let Some(name) = quoted(message)
        && !matches!(segments.last(), Some(Segment::Map { key }) if key == name)
    {
        segments.push(Segment::Map {
            key: name.to_owned(),
        });
        shown = if shown.is_empty() {
            name.to_owned()
        } else {
            format!("{shown}.{name}")
        };
    }
    (segments, shown)
}

/// Placeholders tried, in turn, for a missing key, so the keys after it are still
/// checked; none of them is ever reported.
pub(super) fn placeholders() -> [toml::Value; 5] {
    [
        toml::Value::String(String::new()),
        toml::Value::Integer(0),
        toml::Value::Boolean(false),
        toml::Value::Array(Vec::new()),
        toml::Value::Table(toml::Table::new()),
    ]
}

/// A key of `tree` by its serde path, as a (table, key) pair to edit.
pub(super) fn parent_and_key<'t>(
    tree: &'t mut toml::Value,
    segments: &[Segment],
) -> Option<(&'t mut toml::Table, String)> {
    let (last, parents) = segments.split_last()?;
    let mut node = tree;
    for segment in parents {
        node = match segment {
            Segment::Map { key } => node.as_table_mut()?.get_mut(key)?,
            Segment::Seq { index } => node.as_array_mut()?.get_mut(*index)?,
            _ => return None,
        };
    }
    match last {
        Segment::Map { key } => Some((node.as_table_mut()?, key.clone())),
        _ => None,
    }
}

/// The name inside the first pair of backticks of a serde message.
pub(super) fn quoted(message: &str) -> Option<&str> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}

impl Validator {
    /// Reports every problem serde finds in the file's shape, not just the first: an
    /// unknown or ill-typed key is reported and dropped, a missing one is reported and
    /// stood in for by a placeholder, and the tree is read again. `known` was already
    /// reported (with its line). Returns the file as read once every problem was set
    /// aside, and the paths of the keys dropped or stood in for, so that what else is
    /// wrong can be found in the same pass.
    pub(super) fn every_shape_problem(
        &mut self,
        mut tree: toml::Value,
        known: &str,
    ) -> Option<(ConnectorFile, Vec<String>)> {
        // The missing key a placeholder stands in for, and the next placeholder to try.
        let mut standing_in: Option<(Vec<Segment>, String, usize)> = None;
        // Keys dropped for their type: that they are then missing is no news.
        let mut dropped: Vec<String> = Vec::new();
        // Missing keys a placeholder stands in for.
        let mut stood_in: Vec<String> = Vec::new();
        for _ in 0..MAX_SHAPE_PROBLEMS * placeholders().len() {
            let error = match serde_path_to_error::deserialize::<_, ConnectorFile>(tree.clone()) {
                Ok(spec) => {
                    let mut touched = dropped;
                    touched.extend(stood_in);
                    return Some((spec, touched));
                }
                Err(error) => error,
            };
            let message = error.inner().message().trim_end().to_owned();
            let (mut segments, path) = offending_key(error.path(), &message);
            if let Some((at, shown, next)) = &mut standing_in
                && path.starts_with(shown.as_str())
            {
                // The placeholder has the wrong shape: try the next one.
                let value = placeholders().into_iter().nth(*next)?;
                *next += 1;
                match parent_and_key(&mut tree, at) {
                    Some((table, key)) => table.insert(key, value),
                    None => return None,
                };
                continue;
            }
            standing_in = None;
            let missing = quoted(&message)
                .filter(|_| message.starts_with("missing field"))
                .map(|name| match path.as_str() {
                    "" => name.to_owned(),
                    parent => format!("{parent}.{name}"),
                });
            let already = (path == known && self.problems.len() == 1)
                || missing.as_ref().is_some_and(|m| dropped.contains(m));
            if !already {
                self.report(path.clone(), message.clone());
            }
            if self.problems.len() >= MAX_SHAPE_PROBLEMS {
                return None;
            }
            match missing {
                Some(shown) => {
                    let name = quoted(&message)?;
                    segments.push(Segment::Map {
                        key: name.to_owned(),
                    });
                    let (table, key) = parent_and_key(&mut tree, &segments)?;
                    table.insert(key, toml::Value::String(String::new()));
                    stood_in.push(shown.clone());
                    standing_in = Some((segments, shown, 1));
                }
                None => {
                    let (table, key) = parent_and_key(&mut tree, &segments)?;
                    table.remove(&key)?;
                    dropped.push(path);
                }
            }
        }
        None
    }

    pub(super) fn toml_problem(
        &self,
        text: &str,
        error: &toml::de::Error,
        path: String,
    ) -> Problem {
        let location = error.span().map(|span| {
            let mut start = span.start.min(text.len());
            while !text.is_char_boundary(start) {
                start -= 1;
            }
            let before = &text[..start];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, str::len) + 1;
            format!(" (line {line}, column {column})")
        });
        Problem {
            file: self.file.clone(),
            path,
            message: format!(
                "{}{}",
                error.message().trim_end(),
                location.unwrap_or_default()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{HARBOR, changed, has, problems};

    #[test]
    fn every_unknown_and_missing_key_is_reported_in_one_pass() {
        let text = changed(HARBOR, "country = \"US\"", "kountry = \"US\"");
        let text = changed(&text, "concurrency = 2", "concurrency = 2\nburst = 9");
        let found = problems(&text);
        has(&found, "kountry", "unknown");
        has(&found, "limits.burst", "unknown");
        // A missing key is reported at the table that lacks it.
        has(&found, "", "missing field `country`");
    }

    #[test]
    fn a_value_of_the_wrong_type_names_its_key() {
        let found = problems(&changed(HARBOR, "page_size = 25", "page_size = \"25\""));
        assert!(
            found.iter().any(|(path, _)| path == "limits.page_size"),
            "{found:#?}"
        );
    }

    #[test]
    fn broken_toml_is_reported_with_where_it_broke() {
        let found = problems(&changed(HARBOR, "[limits]", "[limits"));
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].1.contains("line"), "{found:#?}");
    }
}
