//! Field mappings: every canonical field an endpoint needs, where it comes from
//! (an RFC 9535 JSONPath in the record, the fan-out account's record or a joined
//! element, or a constant), how it is converted, and where a sign comes from.

use super::*;

/// What the fields of one endpoint may read besides the record.
#[derive(Debug, Default)]
pub(super) struct Scopes {
    /// The endpoint runs once per account: `from = "account"` reads its record, and
    /// `account_external_id` is the account's unless mapped otherwise.
    pub(super) fan_out: bool,
    /// The endpoint's joins, by name.
    pub(super) joins: Vec<String>,
    /// Required fields another endpoint fills (an account's details).
    pub(super) provided: Vec<&'static str>,
}

impl Validator {
    pub(super) fn json_path(&mut self, path: &str, raw: &str) -> Option<JsonPath> {
        if !raw.trim_start().starts_with('$') {
            self.report(
                path,
                format!(
                    "`{raw}` is not a JSONPath: it must start with `$` (the record itself), e.g. `$.{}`",
                    raw.trim_start_matches(['.', '@'])
                ),
            );
            return None;
        }
        match JsonPath::parse(raw) {
            Ok(p) => Some(p),
            Err(e) => {
                self.report(
                    path,
                    format!("`{raw}` is not a valid JSONPath (RFC 9535): {e}"),
                );
                None
            }
        }
    }

    pub(super) fn mapping(
        &mut self,
        at: &str,
        specs: &BTreeMap<String, FieldSpec>,
        defs: &'static [FieldDef],
        scopes: &Scopes,
    ) -> Option<Mapping> {
        let before = self.problems.len();
        let mut compiled = BTreeMap::new();
        for (name, spec) in specs {
            let path = format!("{at}.{name}");
            let Some(def) = defs.iter().find(|d| d.name == name) else {
                let known: Vec<_> = defs.iter().map(|d| d.name).collect();
                self.report(
                    path,
                    format!("unknown field; this endpoint maps: {}", known.join(", ")),
                );
                continue;
            };
            if let Some(field) = self.field(&path, def, spec, scopes) {
                compiled.insert(def.name, field);
            }
        }
        if scopes.fan_out
            && defs.iter().any(|d| d.name == "account_external_id")
            && !specs.contains_key("account_external_id")
        {
            compiled.insert(
                "account_external_id",
                CompiledField {
                    source: Source::AccountId,
                    default: None,
                    map: BTreeMap::new(),
                    minor_units: None,
                    format: TimeFormat::Iso8601,
                    timezone: None,
                    scope: Scope::Record,
                    sign: None,
                },
            );
        }
        for def in defs.iter().filter(|d| d.required) {
            if !specs.contains_key(def.name)
                && !compiled.contains_key(def.name)
                && !scopes.provided.contains(&def.name)
            {
                self.report(
                    format!("{at}.{}", def.name),
                    "required field has no mapping (give a `path`, a `value` or a `default`)",
                );
            }
        }
        (self.problems.len() == before).then(|| Mapping::new(compiled))
    }

    pub(super) fn field(
        &mut self,
        at: &str,
        def: &FieldDef,
        spec: &FieldSpec,
        scopes: &Scopes,
    ) -> Option<CompiledField> {
        let scope = match spec.from.as_deref() {
            None | Some("record") => Scope::Record,
            Some("account") if scopes.fan_out => Scope::Account,
            Some("account") => {
                self.report(
                    format!("{at}.from"),
                    "only a fan-out endpoint (`for_each = \"accounts\"`) reads from the account",
                );
                return None;
            }
            Some(join) if scopes.joins.iter().any(|j| j == join) => Scope::Join(join.to_owned()),
            Some(other) => {
                let mut known = vec!["record".to_owned()];
                if scopes.fan_out {
                    known.push("account".into());
                }
                known.extend(scopes.joins.iter().cloned());
                self.report(
                    format!("{at}.from"),
                    format!(
                        "`{other}` is not something this endpoint reads; use one of: {}",
                        known.join(", ")
                    ),
                );
                return None;
            }
        };
        let sign = match &spec.sign {
            None => None,
            Some(_) if def.kind != Kind::Decimal => {
                self.report(
                    format!("{at}.sign"),
                    "only decimal fields take their sign from another field",
                );
                return None;
            }
            Some(sign) => {
                let path = self
                    .json_path(&format!("{at}.sign.path"), &sign.path)
                    .map(|path| FieldPath::new(path, &sign.path));
                let mut negative = BTreeMap::new();
                for (indicator, to) in &sign.map {
                    match to.as_str() {
                        "+" => {
                            negative.insert(indicator.clone(), false);
                        }
                        "-" => {
                            negative.insert(indicator.clone(), true);
                        }
                        other => self.report(
                            format!("{at}.sign.map.{indicator}"),
                            format!("`{other}` is not a sign: use \"+\" or \"-\""),
                        ),
                    }
                }
                if sign.map.is_empty() {
                    self.report(
                        format!("{at}.sign.map"),
                        "say which indicator values mean \"+\" and which \"-\"",
                    );
                }
                Some(SignFrom {
                    path: path?,
                    negative,
                })
            }
        };
        let source = match (&spec.path, &spec.value) {
            (Some(_), Some(_)) => {
                self.report(at, "give either `path` or `value`, not both");
                return None;
            }
            (Some(p), None) => {
                let path = self.json_path(&format!("{at}.path"), p)?;
                Source::Path(FieldPath::new(path, p))
            }
            (None, Some(v)) => Source::Const(v.clone()),
            (None, None) if spec.default.is_some() => Source::Const(String::new()),
            (None, None) => {
                self.report(at, "needs a `path`, a `value` or a `default`");
                return None;
            }
        };
        if spec.minor_units.is_some() && def.kind != Kind::Decimal {
            self.report(
                format!("{at}.minor_units"),
                "only decimal fields can be in minor units",
            );
        }
        if let Some(scale) = spec.minor_units
            && scale > 18
        {
            self.report(format!("{at}.minor_units"), "scale must be 0 to 18");
        }
        let format = match (&spec.format, def.kind) {
            (None, _) => TimeFormat::Iso8601,
            (Some(f), Kind::Date | Kind::DateTime) => match TimeFormat::parse(f) {
                Ok(format) => format,
                Err(message) => {
                    self.report(format!("{at}.format"), message);
                    return None;
                }
            },
            (Some(_), _) => {
                self.report(
                    format!("{at}.format"),
                    "only date and date-time fields take a format",
                );
                return None;
            }
        };
        let timezone = match (&spec.timezone, def.kind) {
            (None, _) => None,
            (Some(zone), Kind::Date | Kind::DateTime) => match zone.parse::<Tz>() {
                Ok(zone) => Some(zone),
                Err(_) => {
                    self.report(
                        format!("{at}.timezone"),
                        format!("`{zone}` is not an IANA time zone like America/New_York"),
                    );
                    return None;
                }
            },
            (Some(_), _) => {
                self.report(
                    format!("{at}.timezone"),
                    "only date and date-time fields take a time zone",
                );
                return None;
            }
        };
        if let Kind::Enum(allowed) = def.kind {
            for (from, to) in &spec.map {
                if !allowed.contains(&to.as_str()) {
                    self.report(
                        format!("{at}.map.{from}"),
                        format!("`{to}` is not one of: {}", allowed.join(", ")),
                    );
                }
            }
            for constant in spec.value.iter().chain(spec.default.iter()) {
                let mapped = spec.map.get(constant).unwrap_or(constant);
                if !allowed.contains(&mapped.as_str()) {
                    self.report(
                        at,
                        format!("`{constant}` is not one of: {}", allowed.join(", ")),
                    );
                }
            }
        }
        Some(CompiledField {
            source,
            default: spec.default.clone(),
            map: spec.map.clone(),
            minor_units: spec.minor_units,
            format,
            timezone,
            scope,
            sign,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{HARBOR, changed, has, problems};

    #[test]
    fn a_jsonpath_is_checked_where_it_is_written() {
        let found = problems(&changed(
            HARBOR,
            "name = { path = \"$.nickname\" }",
            "name = { path = \"$.nick[\" }",
        ));
        has(
            &found,
            "endpoints.accounts.fields.name.path",
            "not a valid JSONPath",
        );
    }

    #[test]
    fn unknown_and_unmapped_fields_are_named() {
        let text = changed(
            HARBOR,
            "mask = { path = \"$.last_four\" }",
            "colour = { path = \"$.last_four\" }",
        );
        let text = changed(&text, "external_id = { path = \"$.account_number\" }\n", "");
        let found = problems(&text);
        has(&found, "endpoints.accounts.fields.colour", "unknown field");
        has(
            &found,
            "endpoints.accounts.fields.external_id",
            "required field has no mapping",
        );
    }

    #[test]
    fn a_field_has_a_path_or_a_value_not_both() {
        let found = problems(&changed(
            HARBOR,
            "name = { path = \"$.nickname\" }",
            "name = { path = \"$.nickname\", value = \"Savings\" }",
        ));
        has(&found, "endpoints.accounts.fields.name", "not both");
    }
}
