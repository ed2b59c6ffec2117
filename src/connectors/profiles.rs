//! Profiles: a standard (FDX, UK Open Banking, a Plaid-shaped aggregator) written
//! once, in `connectors/profiles/<name>.toml`, for institution files to `extends`.
//! The shipped profiles are part of the binary, so a file that extends one reads
//! the same wherever finsync runs. A file is read as its profile with the file's own
//! keys set over it: tables merge key by key, anything else (text, numbers, lists)
//! the file sets replaces the profile's.

use toml::{Table, Value};

/// One shipped profile.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    pub name: &'static str,
    /// Where it lives in the repository, for messages.
    pub file: &'static str,
    pub text: &'static str,
}

/// Every shipped profile.
pub const SHIPPED: &[Profile] = &[
    Profile {
        name: "fdx",
        file: "connectors/profiles/fdx.toml",
        text: include_str!("../../connectors/profiles/fdx.toml"),
    },
    Profile {
        name: "plaid",
        file: "connectors/profiles/plaid.toml",
        text: include_str!("../../connectors/profiles/plaid.toml"),
    },
    Profile {
        name: "uk-open-banking",
        file: "connectors/profiles/uk-open-banking.toml",
        text: include_str!("../../connectors/profiles/uk-open-banking.toml"),
    },
];

/// The shipped profile called `name`.
pub fn shipped(name: &str) -> Option<&'static Profile> {
    SHIPPED.iter().find(|p| p.name == name)
}

/// The names of the shipped profiles, for messages.
pub fn names() -> String {
    SHIPPED
        .iter()
        .map(|p| p.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `file` set over `profile`.
pub fn merge(mut profile: Table, file: Table) -> Table {
    for (key, value) in file {
        match (profile.get_mut(&key), value) {
            (Some(Value::Table(under)), Value::Table(over)) => {
                let merged = merge(std::mem::take(under), over);
                *under = merged;
            }
            (_, value) => {
                profile.insert(key, value);
            }
        }
    }
    profile
}

/// Whether `tree` sets the key at a validator's dotted path (`a.b[0].c`), or a key
/// on the way to it that is not a table (and so stands for everything below).
pub fn sets(tree: &Table, path: &str) -> bool {
    let mut node = Some(tree);
    for segment in segments(path) {
        let Some(table) = node else { return false };
        match table.get(segment.as_str()) {
            None => return false,
            Some(Value::Table(inner)) => node = Some(inner),
            // A list or a value: the rest of the path is inside it.
            Some(_) => return true,
        }
    }
    true
}

/// The line of `text` where the key at the dotted `path` is written, if it is.
pub fn line_of(text: &str, path: &str) -> Option<usize> {
    let document = toml::de::DeTable::parse(text).ok()?;
    let mut table = document.get_ref();
    let mut at = None;
    for segment in segments(path) {
        let (key, value) = table
            .iter()
            .find(|(k, _)| k.get_ref() == segment.as_str())?;
        at = Some(key.span().start);
        match value.get_ref() {
            toml::de::DeValue::Table(inner) => table = inner,
            _ => break,
        }
    }
    let start = at?.min(text.len());
    Some(text[..start].matches('\n').count() + 1)
}

/// The table keys of a dotted path; list indices and what follows them are dropped
/// (a list is replaced whole, so its key says where it came from).
fn segments(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in path.split('.') {
        match part.split_once('[') {
            Some((key, _)) => {
                if !key.is_empty() {
                    out.push(key.to_owned());
                }
                break;
            }
            None if part.is_empty() => {}
            None => out.push(part.to_owned()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Table {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn the_file_sets_its_keys_over_the_profile_table_by_table() {
        let profile = table(
            "name = \"P\"\nscopes = [\"a\", \"b\"]\n[limits]\npage_size = 100\nconcurrency = 4\n",
        );
        let file = table("scopes = [\"c\"]\n[limits]\npage_size = 25\n");
        let merged = merge(profile, file);
        assert_eq!(merged["name"].as_str(), Some("P"));
        assert_eq!(merged["scopes"].as_array().map(Vec::len), Some(1));
        assert_eq!(merged["limits"]["page_size"].as_integer(), Some(25));
        assert_eq!(merged["limits"]["concurrency"].as_integer(), Some(4));
    }

    #[test]
    fn a_path_is_traced_to_the_file_and_line_that_set_it() {
        let text = "name = \"P\"\n\n[endpoints.accounts]\npath = \"x\"\nquery = { a = \"1\" }\n";
        let tree = table(text);
        assert!(sets(&tree, "endpoints.accounts.path"));
        assert!(sets(&tree, "endpoints.accounts.query.a"));
        assert!(!sets(&tree, "endpoints.accounts.records"));
        assert_eq!(line_of(text, "endpoints.accounts.path"), Some(4));
        assert_eq!(line_of(text, "endpoints.accounts.query.a"), Some(5));
        assert_eq!(line_of(text, "name"), Some(1));
        assert_eq!(line_of(text, "nowhere"), None);
    }

    #[test]
    fn every_shipped_profile_is_toml() {
        for profile in SHIPPED {
            assert!(
                toml::from_str::<Table>(profile.text).is_ok(),
                "{}",
                profile.file
            );
        }
    }
}
