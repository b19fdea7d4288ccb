//! [`Record`]s as tables for people: times as RFC 3339 UTC to the second, enum values lowercase,
//! empty values as `-`.

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
        text
    }
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
