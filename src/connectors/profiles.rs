//! Profiles: a standard (FDX, UK Open Banking, a Plaid-shaped aggregator) written
//! once, in `connectors/profiles/<name>.toml`, for institution files to `extends`.
//! The shipped profiles are part of the binary, so a file that extends one reads
//! the same wherever finsync runs. A file is read as its profile with the file's own
//! keys set over it: tables merge key by key, but a field's mapping, a `paging` style
//! and a join the file sets replace the profile's whole, as does anything that is not
//! a table (text, numbers, lists).

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

/// `file` set over `profile`: tables merge key by key, except those that say one
/// thing whole (a field's mapping, a `paging` style, a join), which the file's replaces.
pub fn merge(profile: Table, file: Table) -> Table {
    merge_under(profile, file, None)
}

/// Tables whose entries are each one whole thing.
const WHOLE_ENTRIES: &[&str] = &["fields", "security_fields", "joins"];

fn merge_under(mut profile: Table, file: Table, parent: Option<&str>) -> Table {
    let whole_entries = parent.is_some_and(|p| WHOLE_ENTRIES.contains(&p));
    for (key, value) in file {
        let whole = whole_entries || key == "paging";
        match (profile.get_mut(&key), value) {
            (Some(Value::Table(under)), Value::Table(over)) if !whole => {
                let merged = merge_under(std::mem::take(under), over, Some(&key));
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
    fn a_field_paging_or_join_the_file_sets_replaces_the_profiles_whole() {
        let profile = table(
            "[endpoints.t]\npaging = { type = \"cursor\", cursor_param = \"c\", next_cursor = \"$.n\" }\nwindow = { step_days = 9, history_days = 90 }\n[endpoints.t.fields]\namount = { path = \"$.a\", sign = { path = \"$.s\", map = { D = \"-\" } } }\nname = { path = \"$.n\" }\n",
        );
        let file = table(
            "[endpoints.t]\npaging = { type = \"offset\", offset_param = \"o\", limit_param = \"l\" }\nwindow = { history_days = 30 }\n[endpoints.t.fields]\namount = { value = \"0\" }\n",
        );
        let merged = merge(profile, file);
        let t = &merged["endpoints"]["t"];
        assert_eq!(t["paging"].as_table().map(|p| p.len()), Some(3));
        assert!(t["paging"].get("cursor_param").is_none());
        assert_eq!(t["fields"]["amount"].as_table().map(|f| f.len()), Some(1));
        assert_eq!(t["fields"]["name"]["path"].as_str(), Some("$.n"));
        // A window is tuned key by key.
        assert_eq!(t["window"]["step_days"].as_integer(), Some(9));
        assert_eq!(t["window"]["history_days"].as_integer(), Some(30));
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
