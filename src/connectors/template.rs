//! Templates: text in a connector file with values filled in per request, in paths
//! (`accounts/{account.external_id}/transactions`), query values and headers.
//!
//! `{account.external_id}` is the institution's id of the account a fan-out request
//! is for, `{account.$.…}` a singular JSONPath into that account's record as the
//! accounts endpoint returned it, and `{uuid}` a fresh random UUID (e.g. for
//! `x-fapi-interaction-id`). `{{` and `}}` stand for literal braces.

use serde_json::Value;
use serde_json_path::JsonPath;

use super::mapping::Parent;

#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Uuid,
    AccountId,
    AccountPath(JsonPath),
}

/// A compiled template.
#[derive(Debug, Clone)]
pub struct Template {
    parts: Vec<Part>,
}

/// How a filled-in value is written into the text around it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// As it is (query values and headers, which their encoders escape).
    None,
    /// As one URL path segment: `/`, `?`, `#`, `%` and the like percent-encoded.
    PathSegment,
}

impl Template {
    /// Compiles `raw`, or says what is wrong with it and how to write it.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = raw;
        while let Some(at) = rest.find(['{', '}']) {
            text.push_str(&rest[..at]);
            let tail = &rest[at..];
            if let Some(after) = tail.strip_prefix("{{") {
                text.push('{');
                rest = after;
                continue;
            }
            if let Some(after) = tail.strip_prefix("}}") {
                text.push('}');
                rest = after;
                continue;
            }
            if tail.starts_with('}') {
                return Err("a `}` closes nothing (write `}}` for a literal brace)".into());
            }
            let Some(end) = tail.find('}') else {
                return Err("a `{` is never closed (write `{{` for a literal brace)".into());
            };
            let name = tail[1..end].trim();
            let part = match name {
                "uuid" => Part::Uuid,
                "account.external_id" => Part::AccountId,
                _ => match name.strip_prefix("account.") {
                    Some(path) if path.starts_with('$') => {
                        Part::AccountPath(JsonPath::parse(path).map_err(|e| {
                            format!(
                                "`{{{name}}}`: `{path}` is not a valid JSONPath (RFC 9535): {e}"
                            )
                        })?)
                    }
                    _ => {
                        return Err(format!(
                            "`{{{name}}}` is not a value a request can take: use {{account.external_id}}, {{account.$.<path in the account's record>}} or {{uuid}}"
                        ));
                    }
                },
            };
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut text)));
            }
            parts.push(part);
            rest = &tail[end + 1..];
        }
        text.push_str(rest);
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Self { parts })
    }

    /// Whether the template names the account a request is for: such text belongs
    /// to a fan-out endpoint.
    pub fn names_account(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::AccountId | Part::AccountPath(_)))
    }

    /// Whether the template is new text on every request (it holds a `{uuid}`).
    pub fn is_fresh(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Uuid))
    }

    /// Whether the template is the same text on every request.
    pub fn is_fixed(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Text(_)))
    }

    /// The text with every value filled in with `x`, to check what it makes.
    pub fn sample(&self) -> String {
        self.parts
            .iter()
            .map(|part| match part {
                Part::Text(text) => text.as_str(),
                _ => "x",
            })
            .collect()
    }

    /// The text with every value filled in for a request about `account` (if any);
    /// `Err` says which value was missing.
    pub fn render(&self, account: Option<&Parent>, escape: Escape) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            let value = match part {
                Part::Text(text) => {
                    out.push_str(text);
                    continue;
                }
                Part::Uuid => uuid::Uuid::new_v4().to_string(),
                Part::AccountId => account
                    .map(|a| a.external_id.clone())
                    .ok_or("{account.external_id} outside a fan-out request")?,
                Part::AccountPath(path) => {
                    let record = account
                        .map(|a| &a.record)
                        .ok_or("{account.…} outside a fan-out request")?;
                    match path.query(record).at_most_one() {
                        Ok(Some(Value::String(s))) => s.clone(),
                        Ok(Some(Value::Number(n))) => n.to_string(),
                        Ok(Some(Value::Bool(b))) => b.to_string(),
                        _ => {
                            return Err(format!(
                                "the account's record has no single value at `{path}`"
                            ));
                        }
                    }
                }
            };
            match escape {
                // `.` and `..` are path steps, not names, however encoded.
                Escape::PathSegment if value == "." || value == ".." => {
                    return Err(format!("`{value}` cannot name a path segment"));
                }
                Escape::None => out.push_str(&value),
                Escape::PathSegment => out.extend(
                    percent_encoding::utf8_percent_encode(&value, SEGMENT).map(|s| s.to_owned()),
                ),
            }
        }
        Ok(out)
    }
}

/// What a path segment may not contain as it is (RFC 3986 `pchar` keeps the rest).
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

#[cfg(test)]
mod tests {
    use super::*;

    fn parent() -> Parent {
        Parent {
            external_id: "acc/1 2".into(),
            record: serde_json::json!({"accountId": "acc/1 2", "n": 7}),
        }
    }

    #[test]
    fn account_values_fill_a_path_one_escaped_segment_each() {
        let t = Template::parse("accounts/{account.external_id}/tx/{account.$.n}").unwrap();
        assert!(t.names_account() && !t.is_fixed());
        assert_eq!(
            t.render(Some(&parent()), Escape::PathSegment).unwrap(),
            "accounts/acc%2F1%202/tx/7"
        );
        assert!(t.render(None, Escape::PathSegment).is_err());
        // An id that is a path step would climb out of the path.
        let climbing = Parent {
            external_id: "..".into(),
            record: serde_json::json!({}),
        };
        let one = Template::parse("accounts/{account.external_id}/tx").unwrap();
        assert!(one.render(Some(&climbing), Escape::PathSegment).is_err());
        let braces = Template::parse("a{{b}}").unwrap();
        assert_eq!(braces.render(None, Escape::None).unwrap(), "a{b}");
    }

    #[test]
    fn a_uuid_is_fresh_per_request() {
        let t = Template::parse("{uuid}").unwrap();
        let (a, b) = (
            t.render(None, Escape::None).unwrap(),
            t.render(None, Escape::None).unwrap(),
        );
        assert_ne!(a, b);
        assert!(uuid::Uuid::parse_str(&a).is_ok());
    }

    #[test]
    fn unknown_names_and_open_braces_say_how_to_write_them() {
        let unknown = Template::parse("accounts/{account.id}").unwrap_err();
        assert!(unknown.contains("{account.external_id}"), "{unknown}");
        assert!(Template::parse("a{b").unwrap_err().contains("never closed"));
        assert!(
            Template::parse("a}b")
                .unwrap_err()
                .contains("closes nothing")
        );
    }
}
