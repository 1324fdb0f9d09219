//! Reporting every unknown key, not only the first.
//!
//! The raw structs deny unknown keys, and serde stops at the first one. To report them all,
//! `parse` blanks the entry of each unknown key out of a copy of the text (with spaces, keeping
//! every newline, so line and column numbers stay those of the file) and parses again. This file
//! finds the bytes of one entry, given where its key starts: the whole `key = value` (a dotted
//! key's prefix and an inline table's comma included), or for a table every line of it (its
//! header, its keys, its sub-tables).

use std::ops::Range;

use toml_edit::{ImDocument, Item, Key, Table, Value};

/// `text` with the entry whose key starts at byte `key_start` blanked out, if that entry can be
/// found and the text is still valid TOML without it.
pub(crate) fn without_entry(text: &str, key_start: usize) -> Option<String> {
    let doc = ImDocument::parse(text).ok()?;
    let mut ranges = Vec::new();
    if !find_in_table(doc.as_table(), text, key_start, &mut ranges) || ranges.is_empty() {
        return None;
    }
    let mut bytes = text.as_bytes().to_vec();
    for r in ranges {
        for b in bytes.get_mut(r)? {
            if *b != b'\n' && *b != b'\r' {
                *b = b' ';
            }
        }
    }
    // Only ASCII bytes were overwritten, each byte of a multi-byte character included, so the
    // text is still UTF-8.
    let out = String::from_utf8(bytes).ok()?;
    out.parse::<toml::Table>().ok()?;
    Some(out)
}

/// Whether `key` (a path as errors name it: `gateway.listen`, `app[0].health.path`,
/// `app[1].servers[0]`) is a value written in `doc`, not a table nor a missing key.
pub(crate) fn is_value(doc: &ImDocument<&str>, key: &str) -> bool {
    let mut node = Some(Node::Table(doc.as_table()));
    for segment in key.split('.') {
        let (name, index) = match segment.split_once('[') {
            Some((name, rest)) => (name, rest.strip_suffix(']').and_then(|i| i.parse().ok())),
            None => (segment, None),
        };
        node = node.and_then(|n| n.child(name));
        if let Some(i) = index {
            node = node.and_then(|n| n.index(i));
        }
    }
    match node {
        Some(Node::Value(v) | Node::Item(Item::Value(v))) => !matches!(v, Value::InlineTable(_)),
        _ => false,
    }
}

/// A place in a TOML document, for [`is_value`].
#[derive(Clone, Copy)]
enum Node<'a> {
    Table(&'a Table),
    Item(&'a Item),
    Value(&'a Value),
}

impl<'a> Node<'a> {
    fn child(self, name: &str) -> Option<Node<'a>> {
        match self {
            Node::Table(t) | Node::Item(Item::Table(t)) => t.get(name).map(Node::Item),
            Node::Item(Item::Value(Value::InlineTable(t))) | Node::Value(Value::InlineTable(t)) => {
                t.get(name).map(Node::Value)
            }
            _ => None,
        }
    }

    fn index(self, i: usize) -> Option<Node<'a>> {
        match self {
            Node::Item(Item::ArrayOfTables(a)) => a.get(i).map(Node::Table),
            Node::Item(Item::Value(Value::Array(a))) | Node::Value(Value::Array(a)) => {
                a.get(i).map(Node::Value)
            }
            _ => None,
        }
    }
}

fn find_in_table(table: &Table, text: &str, at: usize, out: &mut Vec<Range<usize>>) -> bool {
    for (name, _) in table.iter() {
        let Some((key, item)) = table.get_key_value(name) else {
            continue;
        };
        if key.span().is_some_and(|s| s.start == at) {
            entry_ranges(key, item, text, out);
            return true;
        }
        let found = match item {
            Item::Table(t) => find_in_table(t, text, at, out),
            Item::ArrayOfTables(a) => a.iter().any(|t| find_in_table(t, text, at, out)),
            Item::Value(v) => find_in_value(v, text, at, out),
            Item::None => false,
        };
        if found {
            return true;
        }
    }
    false
}

fn find_in_value(value: &Value, text: &str, at: usize, out: &mut Vec<Range<usize>>) -> bool {
    match value {
        Value::InlineTable(t) => {
            for (name, _) in t.iter() {
                let Some((key, item)) = t.get_key_value(name) else {
                    continue;
                };
                if key.span().is_some_and(|s| s.start == at) {
                    if let Some(mut r) = leaf_range(key, item, text) {
                        with_comma(text, &mut r);
                        out.push(r);
                    }
                    return true;
                }
                if let Item::Value(v) = item {
                    if find_in_value(v, text, at, out) {
                        return true;
                    }
                }
            }
            false
        }
        Value::Array(a) => a.iter().any(|v| find_in_value(v, text, at, out)),
        _ => false,
    }
}

/// Every byte range of the entry `key` = `item`.
fn entry_ranges(key: &Key, item: &Item, text: &str, out: &mut Vec<Range<usize>>) {
    match item {
        Item::Table(t) if !t.is_dotted() => table_ranges(t, out),
        Item::ArrayOfTables(a) => a.iter().for_each(|t| table_ranges(t, out)),
        _ => out.extend(leaf_range(key, item, text)),
    }
}

/// A standard table: its header and body (one span), then its sub-tables.
fn table_ranges(table: &Table, out: &mut Vec<Range<usize>>) {
    out.extend(table.span());
    for (_, item) in table.iter() {
        match item {
            Item::Table(t) if !t.is_dotted() => table_ranges(t, out),
            Item::ArrayOfTables(a) => a.iter().for_each(|t| table_ranges(t, out)),
            _ => {}
        }
    }
}

/// `key = value` on one line or in an inline table: from the start of the (dotted) key to the
/// end of the value, the last one for a dotted table.
fn leaf_range(key: &Key, item: &Item, text: &str) -> Option<Range<usize>> {
    let start = dotted_start(text, key.span()?.start);
    let end = last_end(item)?;
    (start < end).then_some(start..end)
}

fn last_end(item: &Item) -> Option<usize> {
    match item {
        Item::Value(v) => v.span().map(|s| s.end),
        Item::Table(t) => t.iter().filter_map(|(_, i)| last_end(i)).max(),
        Item::ArrayOfTables(_) | Item::None => None,
    }
}

/// Back from a key to the start of its dotted path (`a.b.key`): over key characters, dots,
/// quotes and blanks, up to the line start, `{` or `,`.
fn dotted_start(text: &str, mut at: usize) -> usize {
    let bytes = text.as_bytes();
    while at > 0 {
        let b = bytes[at - 1];
        if b.is_ascii_alphanumeric()
            || matches!(b, b'_' | b'-' | b'.' | b'"' | b'\'' | b' ' | b'\t')
        {
            at -= 1;
        } else {
            break;
        }
    }
    at
}

/// Widens an inline-table entry's range over the comma after it, or else the one before it.
fn with_comma(text: &str, r: &mut Range<usize>) {
    let bytes = text.as_bytes();
    let mut after = r.end;
    while bytes.get(after).is_some_and(|b| *b == b' ' || *b == b'\t') {
        after += 1;
    }
    if bytes.get(after) == Some(&b',') {
        r.end = after + 1;
        return;
    }
    let mut before = r.start;
    while before > 0 && matches!(bytes[before - 1], b' ' | b'\t') {
        before -= 1;
    }
    if before > 0 && bytes[before - 1] == b',' {
        r.start = before - 1;
    }
}

#[cfg(test)]
mod tests {
    use super::{is_value, without_entry};
    use toml_edit::ImDocument;

    fn blank(text: &str, key: &str) -> String {
        let at = text.find(key).unwrap();
        let out = without_entry(text, at).unwrap();
        assert_eq!(out.len(), text.len());
        assert_eq!(out.matches('\n').count(), text.matches('\n').count());
        out
    }

    #[test]
    fn blanks_one_entry_and_keeps_positions() {
        let text = "[gateway]\nlisten = \"x\"\nbogus = [1,\n 2]\n[[app]]\nname = \"a\"\n";
        let out = blank(text, "bogus");
        let table: toml::Table = out.parse().unwrap();
        assert!(table["gateway"].get("bogus").is_none());
        assert_eq!(table["gateway"]["listen"].as_str(), Some("x"));
        assert_eq!(out.find("name"), text.find("name"));
    }

    #[test]
    fn blanks_dotted_inline_and_table_entries() {
        let text = "[[app]]\nname = \"a\"\nscaling.intervall = \"2s\"\nsticky = { cookie = \"S\", bad = 1 }\n[app.bogus]\nx = 1\n[app.bogus.deeper]\ny = 2\n[app.health]\npath = \"/\"\n";
        let out = blank(text, "intervall");
        let out = blank(&out, "bad");
        let out = blank(&out, "bogus");
        let table: toml::Table = out.parse().unwrap();
        let app = &table["app"].as_array().unwrap()[0];
        assert!(app.get("bogus").is_none());
        assert!(app.get("scaling").is_none());
        assert_eq!(app["health"].as_table().unwrap().len(), 1);
        assert_eq!(app["sticky"]["cookie"].as_str(), Some("S"));
        assert!(app["sticky"].get("bad").is_none());
    }

    #[test]
    fn finds_written_values_by_their_error_path() {
        let text = "[gateway]\nlisten = \"x\"\n[[app]]\nname = \"a\"\nhealth = { path = \"h\" }\nservers = [\"1\", \"2\"]\n[app.sticky]\ncookie = \"c\"\n";
        let doc = ImDocument::parse(text).unwrap();
        for key in [
            "gateway.listen",
            "app[0].name",
            "app[0].health.path",
            "app[0].servers",
            "app[0].servers[1]",
            "app[0].sticky.cookie",
        ] {
            assert!(is_value(&doc, key), "{key}");
        }
        for key in [
            "gateway",
            "gateway.threads",
            "app[0]",
            "app[1].name",
            "app[0].health",
            "app[0].servers[2]",
            "app[0].sticky",
        ] {
            assert!(!is_value(&doc, key), "{key}");
        }
    }

    #[test]
    fn no_entry_at_that_offset() {
        assert_eq!(without_entry("a = 1\n", 3), None);
        assert_eq!(without_entry("a = \n", 0), None);
    }
}
