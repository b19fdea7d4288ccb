//! [`Record`]s as tables for people: times as RFC 3339 UTC to the second, enum values lowercase,
//! empty values as `-`.
//!
//! Every string in a table came from the server, which got most of them from whoever created the
//! token or principal: control characters (ANSI escapes, carriage returns, bells) and Unicode
//! bidi overrides in them could rewrite the operator's terminal or make one value read as
//! another. [`printable`] shows each such character as a visible `\u{…}` escape instead.

use chrono::SecondsFormat;
use comfy_table::{ContentArrangement, Table, presets};

use super::record::{Field, Record, rfc3339};

/// One record as a two-column table of its fields, followed by a table for each repeated message
/// field (e.g. the usage's top endpoints).
pub(super) fn document(record: &Record) -> String {
    let mut details = new_table();
    let mut sections = Vec::new();
    for (name, field) in record.fields() {
        match field {
            Field::Messages(items) => {
                let columns: Vec<&str> = items
                    .first()
                    .map(|first| first.fields().map(|(column, _)| column).collect())
                    .unwrap_or_default();
                sections.push(format!("{}:\n{}", label(name), list(items, &columns)));
            }
            _ => {
                details.add_row(vec![label(name), cell(field)]);
            }
        }
    }
    let mut text = details.to_string();
    for section in sections {
        text.push_str("\n\n");
        text.push_str(&section);
    }
    text
}

/// Records as rows, showing the named fields as columns; `(none)` when there are no records.
pub(super) fn list(records: &[Record], columns: &[&str]) -> String {
    if records.is_empty() {
        return "(none)".to_owned();
    }
    let mut table = new_table();
    table.set_header(columns.iter().map(|column| label(column)));
    for record in records {
        table.add_row(
            columns
                .iter()
                .map(|column| record.get(column).map_or_else(|| "-".to_owned(), cell)),
        );
    }
    table.to_string()
}

fn new_table() -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    table
}

/// `owner_id` → `owner id`.
fn label(name: &str) -> String {
    name.replace('_', " ")
}

fn cell(field: &Field) -> String {
    let text = match field {
        Field::Text(text) => text.clone(),
        Field::List(values) => values.join(", "),
        Field::Map(pairs) => pairs
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect::<Vec<_>>()
            .join(", "),
        Field::Flag(flag) => if *flag { "yes" } else { "no" }.to_owned(),
        Field::Number(number) => number.map(|number| number.to_string()).unwrap_or_default(),
        Field::Share(share) => format!("{:.1}%", share * 100.0),
        Field::Enum { label, .. } => label.clone(),
        Field::Time(time) => time
            .as_ref()
            .map(|time| rfc3339(time, SecondsFormat::Secs))
            .unwrap_or_default(),
        Field::Span(span) => span
            .and_then(|span| std::time::Duration::try_from(span).ok())
            .map(|span| humantime::format_duration(span).to_string())
            .unwrap_or_default(),
        Field::Message(message) => message.as_ref().map(inline).unwrap_or_default(),
        Field::Messages(items) => format!("{} items", items.len()),
    };
    if text.is_empty() {
        "-".to_owned()
    } else {
        printable(&text, Newlines::Escape)
    }
}

/// Whether [`printable`] keeps line breaks (whole reports) or escapes them (table cells, where a
/// break would forge a row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Newlines {
    Keep,
    Escape,
}

/// `text` with every control character (C0, DEL, C1: ESC, CR, BEL, …) and every bidi control
/// (U+061C, U+200E/U+200F, U+202A–U+202E, U+2066–U+2069) replaced by its `\u{…}` escape, so
/// what reaches the terminal is only what it shows.
pub(super) fn printable(text: &str, newlines: Newlines) -> String {
    let mut shown = String::with_capacity(text.len());
    for character in text.chars() {
        let kept_break = character == '\n' && newlines == Newlines::Keep;
        if !kept_break && is_unprintable(character) {
            shown.push_str(&character.escape_unicode().to_string());
        } else {
            shown.push(character);
        }
    }
    shown
}

fn is_unprintable(character: char) -> bool {
    character.is_control()
        || matches!(
            character,
            '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

/// A nested message in one cell: `limit 60, remaining 59, reset seconds 0`.
fn inline(record: &Record) -> String {
    let parts: Vec<String> = record
        .fields()
        .map(|(name, field)| format!("{} {}", label(name), cell(field)))
        .collect();
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use prost_types::Timestamp;

    use super::*;

    fn token_record() -> Record {
        Record::default()
            .with("id", Field::text("tok_1"))
            .with("name", Field::text("ci deploy"))
            .with("roles", Field::List(Vec::new()))
            .with(
                "expires_at",
                Field::Time(Some(Timestamp {
                    seconds: 1_769_817_600,
                    nanos: 5,
                })),
            )
    }

    #[test]
    fn a_document_shows_each_field_with_times_to_the_second_and_empty_values_as_dashes() {
        let text = document(&token_record());
        assert!(text.contains("ci deploy"), "{text}");
        assert!(text.contains("2026-01-31T00:00:00Z"), "{text}");
        assert!(
            text.lines()
                .any(|line| line.contains("roles") && line.contains('-')),
            "{text}"
        );
    }

    #[test]
    fn a_list_shows_only_the_chosen_columns() {
        let text = list(&[token_record()], &["id", "expires_at"]);
        assert!(
            text.contains("expires at") && text.contains("tok_1"),
            "{text}"
        );
        assert!(!text.contains("ci deploy"), "{text}");
    }

    #[test]
    fn control_characters_and_bidi_overrides_from_the_server_are_shown_escaped() {
        let hostile =
            "ci\u{1b}[2J\u{1b}]0;owned\u{7}\rdeploy\u{202E}gpj.exe\u{2066}x\u{9b}31m\nrow";
        let record = Record::default().with("name", Field::text(hostile));
        for text in [
            document(&record),
            list(std::slice::from_ref(&record), &["name"]),
        ] {
            assert!(
                !text.chars().any(|c| c != '\n' && is_unprintable(c)),
                "{text:?}"
            );
            assert!(text.contains("ci\\u{1b}[2J"), "{text}");
            assert!(text.contains("\\u{202e}gpj.exe"), "{text}");
            assert!(
                !text.contains("\nrow"),
                "a break inside a cell forges no row: {text}"
            );
        }
    }

    #[test]
    fn plain_output_keeps_its_line_breaks_and_escapes_the_rest() {
        assert_eq!(
            printable("revoked token a\r\u{1b}[1Ab\nnext", Newlines::Keep),
            "revoked token a\\u{d}\\u{1b}[1Ab\nnext"
        );
        assert_eq!(printable("tab\there", Newlines::Escape), "tab\\u{9}here");
        assert_eq!(printable("plain é ✓", Newlines::Escape), "plain é ✓");
    }

    #[test]
    fn an_empty_list_says_none() {
        assert_eq!(list(&[], &["id"]), "(none)");
    }

    #[test]
    fn repeated_messages_become_their_own_tables() {
        let usage = Record::default()
            .with("total_calls", Field::Number(Some(3)))
            .with(
                "top_endpoints",
                Field::Messages(vec![
                    Record::default().with("endpoint", Field::text("GET /a")),
                ]),
            );
        let text = document(&usage);
        assert!(text.contains("top endpoints:\n"), "{text}");
        assert!(text.contains("GET /a"), "{text}");
    }
}
