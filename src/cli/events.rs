//! `tessera events watch`: lifecycle events as they commit, one line (or JSON object) each.

use std::io::Write;

use chrono::SecondsFormat;
use serde_json::{Map, Value, json};
use tessera::proto;
use tokio_stream::StreamExt;

use super::connect::admin_client;
use super::error::{CliError, answer};
use super::record::rfc3339;
use super::{ClientArgs, Report};

#[derive(Debug, clap::Subcommand)]
pub enum EventsCommand {
    /// Stream lifecycle events (token.created, token.revoked, …), oldest first, one per line
    /// (with --json, one JSON object per line), until interrupted or --limit events were
    /// printed. Resume with --after and the last printed id.
    Watch(WatchArgs),
}

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// The tenant [default: the server's default tenant].
    #[arg(long, conflicts_with = "all_tenants")]
    tenant: Option<String>,
    /// Every tenant the admin key may act in.
    #[arg(long)]
    all_tenants: bool,
    /// Only this event type; repeat for several [default: every type].
    #[arg(long = "type", value_name = "TYPE")]
    types: Vec<String>,
    /// Start after this event id (exclusive) [default: with the next event to commit].
    #[arg(long, value_name = "EVENT_ID")]
    after: Option<String>,
    /// Stop after this many events.
    #[arg(long)]
    limit: Option<u64>,
}

pub(super) async fn run(args: &ClientArgs, command: EventsCommand) -> Result<Report, CliError> {
    let EventsCommand::Watch(watch) = command;
    let mut client = admin_client(args).await?;
    let request = proto::WatchEventsRequest {
        tenant: watch.tenant.unwrap_or_default(),
        all_tenants: watch.all_tenants,
        event_types: watch.types,
        after_event_id: watch.after.unwrap_or_default(),
    };
    let mut stream = answer("WatchEvents", client.watch_events(request).await)?;
    let mut printed = 0;
    while watch.limit.is_none_or(|limit| printed < limit) {
        let Some(item) = stream.next().await else {
            break;
        };
        let response = item.map_err(|status| CliError::Rpc {
            rpc: "WatchEvents",
            status,
        })?;
        let Some(event) = response.event else {
            continue;
        };
        let line = if args.json {
            event_json(&event).to_string()
        } else {
            event_line(&event)
        };
        let mut stdout = std::io::stdout().lock();
        // A reader that stopped (`| head`) ends the watch, as it ends any listing.
        if writeln!(stdout, "{line}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            break;
        }
        printed += 1;
    }
    Ok(Report::new(Value::Null, String::new()).quiet())
}

/// An event as one line for people: time, type, tenant, what it is about, and its id (the
/// cursor for --after). The server's text passes through `table::printable`, as every table's.
fn event_line(event: &proto::Event) -> String {
    let time = event
        .time
        .as_ref()
        .map(|time| rfc3339(time, SecondsFormat::Millis))
        .unwrap_or_default();
    let about = [event.token_id.as_str(), event.principal_id.as_str()]
        .into_iter()
        .filter(|id| !id.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let line = format!(
        "{time}  {:<18}  {}  {about}  {}",
        event.r#type, event.tenant, event.id
    );
    super::table::printable(&line, super::table::Newlines::Escape)
}

/// An event as one JSON line (`--json`): the webhook body's members and the event's own.
fn event_json(event: &proto::Event) -> Value {
    json!({
        "id": event.id,
        "type": event.r#type,
        "tenant": event.tenant,
        "time": event.time.as_ref().map(|time| rfc3339(time, SecondsFormat::Micros)),
        "token_id": event.token_id,
        "principal_id": event.principal_id,
        "data": event.data.as_ref().map_or(Value::Null, struct_json),
    })
}

fn struct_json(data: &prost_types::Struct) -> Value {
    Value::Object(
        data.fields
            .iter()
            .map(|(name, value)| (name.clone(), value_json(value)))
            .collect::<Map<_, _>>(),
    )
}

fn value_json(value: &prost_types::Value) -> Value {
    use prost_types::value::Kind;
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(flag)) => Value::Bool(*flag),
        // Whole numbers (counts, credits, seconds) print as integers, as the server wrote them.
        Some(Kind::NumberValue(number)) if number.fract() == 0.0 && number.abs() < 9e15 => {
            json!(*number as i64)
        }
        Some(Kind::NumberValue(number)) => json!(number),
        Some(Kind::StringValue(text)) => Value::String(text.clone()),
        Some(Kind::ListValue(list)) => Value::Array(list.values.iter().map(value_json).collect()),
        Some(Kind::StructValue(inner)) => struct_json(inner),
    }
}
