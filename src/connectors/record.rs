//! One institution record as an endpoint's page held it, and the page it came in.
//!
//! Records taken whole out of a page's plain lists, nearly every record a sync
//! reads, stay the page's own text with where each of their members lies
//! ([`RecordText`]): building and freeing a `serde_json::Value` tree for each, a
//! map of owned keys and a string per value, was the largest part of the worker's
//! work in a first sync (BENCHMARKS.md). A field is read from the text when it is
//! asked for. Records found by a general query, or read with a join, are parsed
//! trees. Either is read through a [`Node`].

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;
use serde_json_path::JsonPath;

/// One record of a page.
#[derive(Debug, Clone)]
pub enum Record {
    Tree(Value),
    Text(RecordText),
}

impl Record {
    /// The record's root, where its fields' paths start.
    pub fn node(&self) -> Node<'_> {
        match self {
            Self::Tree(value) => Node::Tree(value),
            Self::Text(text) => Node::Record(text),
        }
    }

    /// The record as a tree, for what reads a record whole: quarantine, a fan-out's
    /// account, a join.
    pub fn to_value(&self) -> Value {
        match self {
            Self::Tree(value) => value.clone(),
            Self::Text(text) => text.to_value(),
        }
    }
}

/// Two records are equal when they hold the same JSON, however each is kept.
impl PartialEq for Record {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Tree(a), Self::Tree(b)) => a == b,
            _ => self.to_value() == other.to_value(),
        }
    }
}

/// A record's JSON object as its page's text: each member's name and where its
/// value lies in the page.
#[derive(Clone)]
pub struct RecordText {
    page: Arc<str>,
    /// In the record's order; a name given twice counts as its last value, as in
    /// a parsed tree.
    members: Box<[Member]>,
}

#[derive(Debug, Clone)]
struct Member {
    name: Name,
    value: Span,
}

/// A member's name: where it lies in the page, or unescaped when the page wrote
/// it with escapes.
#[derive(Debug, Clone)]
enum Name {
    At(Span),
    Unescaped(Box<str>),
}

/// A stretch of the page's text. Pages are far below 4 GiB (see [`Page::parse`]).
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u32,
    end: u32,
}

impl Span {
    fn of(page: &str, part: &str) -> Self {
        // `part` was borrowed from `page` by the parser.
        let start = part.as_ptr() as usize - page.as_ptr() as usize;
        Self {
            start: start as u32,
            end: (start + part.len()) as u32,
        }
    }

    fn text(self, page: &str) -> &str {
        &page[self.start as usize..self.end as usize]
    }
}

impl RecordText {
    fn name<'s>(&'s self, member: &'s Member) -> &'s str {
        match &member.name {
            Name::At(span) => span.text(&self.page),
            Name::Unescaped(name) => name,
        }
    }

    /// The JSON text of the member `name`, if the record has one.
    fn get(&self, name: &str) -> Option<&str> {
        find(&self.page, &self.members, name)
    }

    fn to_value(&self) -> Value {
        let members = self
            .members
            .iter()
            .map(|member| {
                (
                    self.name(member).to_owned(),
                    parsed(member.value.text(&self.page)),
                )
            })
            .collect();
        Value::Object(members)
    }
}

/// Shown as the JSON it holds.
impl fmt::Debug for RecordText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_value())
    }
}

/// The tree of a value's text that the page parser already read as JSON.
fn parsed(text: &str) -> Value {
    serde_json::from_str(text).expect("a value of a page that parsed")
}

/// A place in a record: the root, or a value found in it.
#[derive(Debug, Clone)]
pub enum Node<'r> {
    Tree(&'r Value),
    /// Found by a general query in a record kept as text.
    Owned(Value),
    Record(&'r RecordText),
    /// A value's JSON text.
    Text(&'r str),
}

/// The value is an object or an array where a single value was wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotScalar;

/// A path selected more than one value where at most one was wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManyValues;

impl<'r> Node<'r> {
    /// The member `name` of an object; `None` for anything else, or when the
    /// object has no such member.
    pub fn get(&self, name: &str) -> Option<Node<'r>> {
        match self {
            Self::Tree(value) => value.get(name).map(Node::Tree),
            Self::Owned(value) => value.get(name).cloned().map(Node::Owned),
            Self::Record(record) => record.get(name).map(Node::Text),
            Self::Text(text) => member(text, name).map(Node::Text),
        }
    }

    /// The one value `path` selects here, if any; `Err` when it selects more than one.
    pub fn select(&self, path: &JsonPath) -> Result<Option<Node<'r>>, ManyValues> {
        match self {
            Self::Tree(value) => path
                .query(value)
                .at_most_one()
                .map(|found| found.map(Node::Tree))
                .map_err(|_| ManyValues),
            _ => {
                let value = self.to_value();
                path.query(&value)
                    .at_most_one()
                    .map(|found| found.cloned().map(Node::Owned))
                    .map_err(|_| ManyValues)
            }
        }
    }

    /// The value as text: a string's text, a number's digits as the institution
    /// sent them (`arbitrary_precision`), `true` or `false`; `None` for null.
    pub fn scalar(&self) -> Result<Option<Cow<'r, str>>, NotScalar> {
        match self {
            Self::Tree(value) => tree_scalar(value).map(|s| s.map(Cow::Borrowed)),
            Self::Owned(value) => tree_scalar(value).map(|s| s.map(|s| Cow::Owned(s.to_owned()))),
            Self::Record(_) => Err(NotScalar),
            Self::Text(text) => text_scalar(text),
        }
    }

    pub fn to_value(&self) -> Value {
        match self {
            Self::Tree(value) => (*value).clone(),
            Self::Owned(value) => value.clone(),
            Self::Record(record) => record.to_value(),
            Self::Text(text) => parsed(text),
        }
    }
}

fn tree_scalar(value: &Value) -> Result<Option<&str>, NotScalar> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        Value::Number(n) => Ok(Some(n.as_str())),
        Value::Bool(b) => Ok(Some(if *b { "true" } else { "false" })),
        Value::Array(_) | Value::Object(_) => Err(NotScalar),
    }
}

fn text_scalar(text: &str) -> Result<Option<Cow<'_, str>>, NotScalar> {
    match text.as_bytes().first() {
        Some(b'n') => Ok(None),
        Some(b't') => Ok(Some(Cow::Borrowed("true"))),
        Some(b'f') => Ok(Some(Cow::Borrowed("false"))),
        // A string the parser read whole: with no escapes, what lies between its
        // quotes is its text.
        Some(b'"') => {
            let inner = &text[1..text.len() - 1];
            Ok(Some(if inner.contains('\\') {
                Cow::Owned(serde_json::from_str::<String>(text).expect("a JSON string"))
            } else {
                Cow::Borrowed(inner)
            }))
        }
        Some(b'{' | b'[') => Err(NotScalar),
        // A number: its digits as sent.
        _ => Ok(Some(Cow::Borrowed(text))),
    }
}

/// The text of the member `name` of the object `text`; `None` when `text` is not
/// an object or has no such member.
fn member<'t>(text: &'t str, name: &str) -> Option<&'t str> {
    if !text.starts_with('{') {
        return None;
    }
    let members = serde_json::Deserializer::from_str(text)
        .deserialize_map(Members {
            page: text,
            expected: NESTED_MEMBERS,
        })
        .ok()?;
    find(text, &members, name)
}

/// The value of the member `name` among `members`, located in `page`: the last
/// one so named, as a parsed tree keeps it.
fn find<'p>(page: &'p str, members: &[Member], name: &str) -> Option<&'p str> {
    // Compared as bytes, lengths first: every field of every record is looked up
    // here, and slicing text checks character boundaries each time.
    let is = |member: &&Member| match &member.name {
        Name::At(span) => {
            (span.end - span.start) as usize == name.len()
                && &page.as_bytes()[span.start as usize..span.end as usize] == name.as_bytes()
        }
        Name::Unescaped(unescaped) => **unescaped == *name,
    };
    members
        .iter()
        .rev()
        .find(is)
        .map(|member| member.value.text(page))
}

/// One page of an endpoint: the document, and the records of its plain lists when
/// they were kept as text. The lists are then empty in `body`.
#[derive(Debug, Clone)]
pub struct Page {
    pub body: Value,
    /// The records of each list in turn, in page order.
    pub records: Option<Vec<RecordText>>,
}

impl Page {
    /// Parses a page, keeping the records of `lists` (each a chain of member names
    /// from the root to a list of objects) as text. A page whose lists are not all
    /// lists of objects where the chains lead, or that names a chain's member
    /// twice, is parsed whole as a tree, and so is every page when `lists` is
    /// `None`: the engine then reads it with the general query.
    pub fn parse(text: &str, lists: Option<&[Vec<String>]>) -> Result<Self, serde_json::Error> {
        if let Some(lists) = lists
            && u32::try_from(text.len()).is_ok()
        {
            let page: Arc<str> = Arc::from(text);
            if let Ok(apart) = Self::apart(&page, lists) {
                return Ok(apart);
            }
        }
        Ok(Self {
            body: serde_json::from_str(text)?,
            records: None,
        })
    }

    fn apart(page: &Arc<str>, lists: &[Vec<String>]) -> Result<Self, serde_json::Error> {
        let mut found = vec![Vec::new(); lists.len()];
        let mut parser = serde_json::Deserializer::from_str(page);
        let body = parser.deserialize_map(Level {
            page,
            lists,
            on: (0..lists.len()).collect(),
            depth: 0,
            found: &mut found,
        })?;
        parser.end()?;
        Ok(Self {
            body: Value::Object(body),
            records: Some(found.into_iter().flatten().collect()),
        })
    }
}

/// An object on the way to one or more lists: `on` are the lists whose chains
/// pass through it, `depth` names into their chains.
struct Level<'p> {
    page: &'p Arc<str>,
    lists: &'p [Vec<String>],
    on: Vec<usize>,
    depth: usize,
    found: &'p mut Vec<Vec<RecordText>>,
}

impl<'de> Visitor<'de> for Level<'_> {
    type Value = serde_json::Map<String, Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        let mut out = serde_json::Map::new();
        let mut passed = Vec::new();
        while let Some(name) = map.next_key::<String>()? {
            let through: Vec<usize> = self
                .on
                .iter()
                .copied()
                .filter(|&list| self.lists[list][self.depth] == name)
                .collect();
            if through.is_empty() {
                out.insert(name, map.next_value()?);
                continue;
            }
            // A tree keeps a name's last value; lists gathered twice would not.
            if passed.contains(&name) {
                return Err(de::Error::custom("a list's member named twice"));
            }
            passed.push(name.clone());
            let ends = through
                .iter()
                .copied()
                .find(|&list| self.lists[list].len() == self.depth + 1);
            let value = match ends {
                // A chain that goes on through a list selects nothing in it.
                Some(list) => {
                    map.next_value_seed(List {
                        page: self.page,
                        into: &mut self.found[list],
                    })?;
                    Value::Array(Vec::new())
                }
                None => Value::Object(map.next_value_seed(Level {
                    page: self.page,
                    lists: self.lists,
                    on: through,
                    depth: self.depth + 1,
                    found: &mut *self.found,
                })?),
            };
            out.insert(name, value);
        }
        Ok(out)
    }
}

impl<'de> DeserializeSeed<'de> for Level<'_> {
    type Value = serde_json::Map<String, Value>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

/// A list of records, each an object kept as text.
struct List<'p> {
    page: &'p Arc<str>,
    into: &'p mut Vec<RecordText>,
}

impl<'de> Visitor<'de> for List<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of objects")
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<(), S::Error> {
        if let Some(size) = seq.size_hint() {
            self.into.reserve(size);
        }
        // A list's records mostly share one shape: each index is sized as the
        // record before it was, so it is neither grown nor shrunk.
        let mut expected = NESTED_MEMBERS;
        while let Some(members) = seq.next_element_seed(Members {
            page: self.page.as_ref(),
            expected,
        })? {
            expected = members.len();
            self.into.push(RecordText {
                page: Arc::clone(self.page),
                members,
            });
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for List<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

/// One record's members, located in the page.
struct Members<'p> {
    page: &'p str,
    /// How many it likely has (JSON does not say before the end).
    expected: usize,
}

/// Members an object is taken to have when nothing says otherwise.
const NESTED_MEMBERS: usize = 16;

impl<'de> Visitor<'de> for Members<'_> {
    type Value = Box<[Member]>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(self.expected));
        while let Some(name) = map.next_key_seed(NameAt { page: self.page })? {
            let value: &'de RawValue = map.next_value()?;
            members.push(Member {
                name,
                value: Span::of(self.page, value.get()),
            });
        }
        Ok(members.into_boxed_slice())
    }
}

impl<'de> DeserializeSeed<'de> for Members<'_> {
    type Value = Box<[Member]>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

/// A member's name: located in the page when written plainly, unescaped otherwise.
struct NameAt<'p> {
    page: &'p str,
}

impl<'de> DeserializeSeed<'de> for NameAt<'_> {
    type Value = Name;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Name, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for NameAt<'_> {
    type Value = Name;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }
    fn visit_borrowed_str<E: de::Error>(self, name: &'de str) -> Result<Name, E> {
        Ok(Name::At(Span::of(self.page, name)))
    }
    fn visit_str<E: de::Error>(self, name: &str) -> Result<Name, E> {
        Ok(Name::Unescaped(name.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chains(chains: &[&[&str]]) -> Vec<Vec<String>> {
        chains
            .iter()
            .map(|chain| chain.iter().map(|name| (*name).to_owned()).collect())
            .collect()
    }

    const PAGE: &str = r#"{
        "added": [
            {"id": "t1", "amount": 1.50, "tiny": -1e-9, "big": 12345678901234567890.123456789,
             "name": "caf\u00e9 \"quoted\"", "n": null, "ok": true, "no": false,
             "nested": {"a": [1, {"b": "c"}], "k\u0065y": "escaped name", "dup": 1, "dup": 2}},
            {"id": "t2", "k\u0065y": "escaped name", "id": "t2-last", "empty": {}, "list": []}
        ],
        "modified": [ {"id" : "m1" , "amount" : 7.00 , "at" : -0 } ],
        "next_cursor": "c2", "has_more": false, "removed": [{"transaction_id": "r1"}]
    }"#;

    fn tree() -> Value {
        serde_json::from_str(PAGE).unwrap()
    }

    /// A page read apart holds what its tree holds: the same records, the first
    /// list's then the second's, and the rest of the document with the lists empty.
    #[test]
    fn records_kept_as_text_are_the_records_the_tree_holds() {
        let page = Page::parse(PAGE, Some(&chains(&[&["added"], &["modified"]]))).unwrap();
        let tree = tree();
        let records: Vec<Value> = page
            .records
            .unwrap()
            .iter()
            .map(RecordText::to_value)
            .collect();
        let listed: Vec<Value> = tree["added"]
            .as_array()
            .unwrap()
            .iter()
            .chain(tree["modified"].as_array().unwrap())
            .cloned()
            .collect();
        assert_eq!(records, listed);
        let mut emptied = tree.clone();
        emptied["added"] = json!([]);
        emptied["modified"] = json!([]);
        assert_eq!(page.body, emptied);
    }

    /// Every member, and members of members, reads the same from the text as from
    /// the tree: strings unescaped, numbers in the digits sent, a repeated name as
    /// its last value.
    #[test]
    fn members_read_from_text_read_as_from_the_tree() {
        let page = Page::parse(PAGE, Some(&chains(&[&["added"], &["modified"]]))).unwrap();
        let tree = tree();
        let listed = tree["added"]
            .as_array()
            .unwrap()
            .iter()
            .chain(tree["modified"].as_array().unwrap());
        let paths: &[&[&str]] = &[
            &["id"],
            &["amount"],
            &["at"],
            &["tiny"],
            &["big"],
            &["name"],
            &["n"],
            &["ok"],
            &["no"],
            &["key"],
            &["missing"],
            &["nested", "key"],
            &["nested", "dup"],
            &["nested", "a"],
            &["nested", "missing"],
            &["id", "x"],
            &["list", "x"],
            &["empty"],
        ];
        for (text, tree) in page.records.unwrap().iter().zip(listed) {
            for path in paths {
                let walk = |root: Node<'_>| -> Option<Result<Option<String>, NotScalar>> {
                    let found = path.iter().try_fold(root, |node, name| node.get(name))?;
                    Some(found.scalar().map(|s| s.map(Cow::into_owned)))
                };
                assert_eq!(
                    walk(Node::Record(text)),
                    walk(Node::Tree(tree)),
                    "{path:?} in {tree}"
                );
            }
        }
        let first = &Page::parse(PAGE, Some(&chains(&[&["added"]])))
            .unwrap()
            .records
            .unwrap()[0];
        let amount = Node::Record(first).get("amount").unwrap();
        assert_eq!(amount.scalar(), Ok(Some(Cow::Borrowed("1.50"))));
        let big = Node::Record(first).get("big").unwrap();
        assert_eq!(
            big.scalar(),
            Ok(Some(Cow::Borrowed("12345678901234567890.123456789")))
        );
    }

    /// A general query reads a record kept as text as it reads the tree.
    #[test]
    fn queries_read_text_as_they_read_the_tree() {
        let page = Page::parse(PAGE, Some(&chains(&[&["added"]]))).unwrap();
        let records = page.records.unwrap();
        let tree = tree();
        for (query, found) in [
            ("$.nested.a[1].b", Ok(Some(json!("c")))),
            ("$.nested.a[*]", Err(ManyValues)),
            ("$['id']", Ok(Some(json!("t1")))),
            ("$.nowhere[0]", Ok(None)),
        ] {
            let path = JsonPath::parse(query).unwrap();
            let from_text = Node::Record(&records[0])
                .select(&path)
                .map(|n| n.map(|n| n.to_value()));
            let from_tree = Node::Tree(&tree["added"][0])
                .select(&path)
                .map(|n| n.map(|n| n.to_value()));
            assert_eq!(from_text, found, "{query}");
            assert_eq!(from_tree, found, "{query}");
        }
    }

    /// Lists further down the document are found through the objects on the way,
    /// whose other members stay in the tree.
    #[test]
    fn lists_inside_objects_are_read_apart() {
        let text = r#"{"Data": {"Transaction": [{"Amount": {"Amount": "10.00"}}], "Count": 1},
                       "Links": {"Next": "/page/2"}}"#;
        let page = Page::parse(text, Some(&chains(&[&["Data", "Transaction"]]))).unwrap();
        assert_eq!(
            page.body,
            json!({"Data": {"Transaction": [], "Count": 1}, "Links": {"Next": "/page/2"}})
        );
        let records = page.records.unwrap();
        assert_eq!(records.len(), 1);
        let amount = Node::Record(&records[0])
            .get("Amount")
            .and_then(|n| n.get("Amount"))
            .unwrap();
        assert_eq!(amount.scalar(), Ok(Some(Cow::Borrowed("10.00"))));
    }

    /// A page whose lists are not lists of objects where the chains lead is parsed
    /// whole, for the general query to read as it always has.
    #[test]
    fn pages_of_another_shape_are_parsed_whole() {
        let lists = chains(&[&["items"]]);
        for text in [
            r#"{"items": {"a": {"id": 1}}}"#,
            r#"{"items": ["a", "b"]}"#,
            r#"{"items": [{"id": 1}, 2]}"#,
            r#"{"items": null}"#,
            r#"{"items": [{"id": 1}], "items": [{"id": 2}]}"#,
            r#"[{"id": 1}]"#,
        ] {
            let page = Page::parse(text, Some(&lists)).unwrap();
            assert!(page.records.is_none(), "{text}");
            assert_eq!(page.body, serde_json::from_str::<Value>(text).unwrap());
        }
        let nested = chains(&[&["data", "items"]]);
        let page = Page::parse(r#"{"data": [{"items": []}]}"#, Some(&nested)).unwrap();
        assert!(page.records.is_none());
        // Malformed: the tree's parser says where.
        let error = Page::parse(r#"{"items": [{"id": 1},]}"#, Some(&lists)).unwrap_err();
        assert!(error.to_string().contains("line 1"), "{error}");
    }

    /// A record kept as text stays readable after its page's other records and
    /// the page itself are gone, and equals the tree it holds.
    #[test]
    fn a_record_outlives_its_page() {
        let record = {
            let page = Page::parse(PAGE, Some(&chains(&[&["added"]]))).unwrap();
            page.records.unwrap().swap_remove(1)
        };
        let tree = tree();
        assert_eq!(
            Record::Text(record.clone()),
            Record::Tree(tree["added"][1].clone())
        );
        assert_eq!(
            Node::Record(&record).get("id").unwrap().scalar(),
            Ok(Some(Cow::Borrowed("t2-last")))
        );
        assert_eq!(
            format!("{record:?}"),
            tree["added"][1].to_string(),
            "shown as its JSON"
        );
    }
}
