//! Paged lists (AIP-158): the shared flags, following `next_page_token`, and the report.

use std::fmt::Write;

use super::Report;
use super::error::CliError;
use super::record::{Field, Record};
use super::table;

#[derive(Debug, clap::Args)]
pub struct PageArgs {
    /// At most this many per page, 1 to 1000 [default: the server's, 100].
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=1000))]
    page_size: Option<i32>,

    /// Continue where an earlier page ended (its next page token).
    #[arg(long)]
    page_token: Option<String>,

    /// Follow the next page tokens to the end and show everything.
    #[arg(long)]
    all: bool,
}

/// Items of one page, or of every page with `--all`.
pub(super) struct Page<T> {
    pub(super) items: Vec<T>,
    /// Empty at the end.
    pub(super) next_page_token: String,
}

impl Page<Record> {
    /// A page of a list response's messages.
    pub(super) fn of<T>(messages: &[T], next_page_token: String) -> Self
    where
        for<'a> &'a T: Into<Record>,
    {
        Self {
            items: messages.iter().map(Into::into).collect(),
            next_page_token,
        }
    }
}

impl PageArgs {
    /// The `page_size` to send; 0 asks for the server's default.
    pub(super) fn page_size(&self) -> i32 {
        self.page_size.unwrap_or(0)
    }

    /// Fetches the page at `--page-token`, and with `--all` every page after it.
    pub(super) async fn collect<T>(
        &self,
        mut fetch: impl AsyncFnMut(String) -> Result<Page<T>, CliError>,
    ) -> Result<Page<T>, CliError> {
        let mut collected = fetch(self.page_token.clone().unwrap_or_default()).await?;
        while self.all && !collected.next_page_token.is_empty() {
            let requested_token = std::mem::take(&mut collected.next_page_token);
            let next = fetch(requested_token.clone()).await?;
            if next.next_page_token == requested_token {
                return Err(CliError::Local(anyhow::anyhow!(
                    "the server answered page token {requested_token} with itself; stopping"
                )));
            }
            collected.items.extend(next.items);
            collected.next_page_token = next.next_page_token;
        }
        Ok(collected)
    }
}

/// `{"<items_name>": [...], "next_page_token": "..."}` for `--json`; for people, a table with the
/// given columns of each record as `shown` makes it and, when more pages exist, how to get them.
pub(super) fn report(
    items_name: &'static str,
    page: Page<Record>,
    columns: &[&str],
    shown: impl Fn(&Record) -> Record,
) -> Report {
    let rows: Vec<Record> = page.items.iter().map(shown).collect();
    let mut human = table::list(&rows, columns);
    if !page.next_page_token.is_empty() {
        // Writing to a String cannot fail.
        let _ = write!(
            human,
            "\n\nmore {items_name}: add --page-token {} (or --all for every page)",
            page.next_page_token
        );
    }
    let json = Record::default()
        .with(items_name, Field::Messages(page.items))
        .with("next_page_token", Field::Text(page.next_page_token))
        .to_json();
    Report::new(json, human)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(all: bool) -> PageArgs {
        PageArgs {
            page_size: None,
            page_token: None,
            all,
        }
    }

    /// Serves pages `[1, 2]`, `[3]` and then the end.
    async fn fetch_from_three_pages(page_token: String) -> Result<Page<u32>, CliError> {
        let (items, next_page_token) = match page_token.as_str() {
            "" => (vec![1, 2], "b"),
            "b" => (vec![3], "c"),
            _ => (vec![], ""),
        };
        Ok(Page {
            items,
            next_page_token: next_page_token.to_owned(),
        })
    }

    async fn collect_three_pages(all: bool) -> (Vec<u32>, String) {
        let page = args(all)
            .collect(async |token| fetch_from_three_pages(token).await)
            .await;
        let page = page.expect("pages are served");
        (page.items, page.next_page_token)
    }

    #[tokio::test]
    async fn without_all_only_the_first_page_is_fetched_and_its_token_kept() {
        assert_eq!(
            collect_three_pages(false).await,
            (vec![1, 2], "b".to_owned())
        );
    }

    #[tokio::test]
    async fn with_all_every_page_is_fetched_until_the_token_is_empty() {
        assert_eq!(
            collect_three_pages(true).await,
            (vec![1, 2, 3], String::new())
        );
    }

    #[tokio::test]
    async fn a_server_repeating_its_page_token_stops_the_loop() {
        let repeating = async |_token: String| {
            Ok(Page {
                items: vec![1],
                next_page_token: "same".to_owned(),
            })
        };
        let page = args(true).collect(repeating).await;
        assert!(matches!(page, Err(CliError::Local(_))));
    }
}
