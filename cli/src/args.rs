//! The command line, as the OneFuzz seed spells it (`--secret_token`, `--event_types`), with
//! kebab-case aliases.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:8080";
pub const DEFAULT_CONSOLE_LISTEN: &str = "127.0.0.1:8090";

#[derive(Debug, Parser)]
#[command(
    name = "webhooks",
    version,
    about = "OneFuzz-compatible webhooks: run the service locally, manage webhooks, debug receivers."
)]
pub struct Cli {
    #[command(flatten)]
    pub remote: Remote,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the client verbs send their requests.
#[derive(Debug, Clone, Args)]
pub struct Remote {
    /// Base URL of the service (a local `webhooks serve` or the deployed API Gateway URL).
    #[arg(long, global = true, env = "WEBHOOKS_ENDPOINT", default_value = DEFAULT_ENDPOINT)]
    pub endpoint: String,
    /// Sign requests with AWS SigV4 from the standard credential chain (automatic for
    /// execute-api hosts).
    #[arg(long, global = true)]
    pub aws: bool,
    /// AWS region for SigV4 (default: from the endpoint host, else the AWS configuration).
    #[arg(long, global = true)]
    pub region: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole service in this process: HTTP API, sender and an embedded store. No AWS.
    Serve(Serve),
    /// Create a webhook subscribed to EVENT_TYPES ("*" for every OneFuzz type).
    Create {
        name: String,
        url: String,
        #[arg(value_name = "EVENT_TYPES")]
        event_types: Vec<String>,
        #[arg(long = "secret_token", visible_alias = "secret-token")]
        secret_token: Option<String>,
        #[arg(long = "message_format", visible_alias = "message-format", value_parser = ["onefuzz", "event_grid", "cloud_events"])]
        message_format: Option<String>,
        /// A header to send on every delivery, as 'Name: value'; repeat for each. Values are
        /// write-only: `get` shows only the names.
        #[arg(long = "header", short = 'H', value_name = "'NAME: VALUE'")]
        headers: Vec<String>,
        /// At most this many attempts per second to this webhook (1 to 10000).
        #[arg(long = "rate_limit_per_second", visible_alias = "rate-limit-per-second", value_name = "N")]
        rate_limit_per_second: Option<u32>,
    },
    /// List webhooks.
    List {
        /// Only webhooks subscribed to this event type.
        #[arg(long = "event_type", visible_alias = "event-type")]
        event_type: Option<String>,
    },
    /// Show one webhook, with its URL and state.
    Get { id: String },
    /// Change a webhook; --event_types replaces the whole list.
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        url: Option<String>,
        #[arg(long = "event_types", visible_alias = "event-types", num_args = 0..)]
        event_types: Option<Vec<String>>,
        #[arg(long = "secret_token", visible_alias = "secret-token")]
        secret_token: Option<String>,
        #[arg(long = "message_format", visible_alias = "message-format", value_parser = ["onefuzz", "event_grid", "cloud_events"])]
        message_format: Option<String>,
        /// Replaces the whole set of custom headers, as 'Name: value'; repeat for each.
        #[arg(long = "header", short = 'H', value_name = "'NAME: VALUE'", conflicts_with = "clear_headers")]
        headers: Vec<String>,
        /// Removes every custom header.
        #[arg(long = "clear_headers", visible_alias = "clear-headers")]
        clear_headers: bool,
        /// At most this many attempts per second to this webhook (1 to 10000).
        #[arg(
            long = "rate_limit_per_second",
            visible_alias = "rate-limit-per-second",
            value_name = "N",
            conflicts_with = "clear_rate_limit"
        )]
        rate_limit_per_second: Option<u32>,
        /// Removes the rate limit.
        #[arg(long = "clear_rate_limit", visible_alias = "clear-rate-limit")]
        clear_rate_limit: bool,
        /// Re-enable a webhook that was disabled for failing.
        #[arg(long)]
        enable: bool,
    },
    /// Delete a webhook.
    Delete { id: String },
    /// Send a signed ping event to a webhook.
    Ping { id: String },
    /// Show a webhook's delivery log, newest first.
    Logs {
        id: String,
        /// Only entries in this state.
        #[arg(long, value_parser = ["queued", "retrying", "succeeded", "failed"])]
        state: Option<String>,
        /// At most this many entries.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// List the event type catalog, or show one type's JSON Schema and example.
    #[command(name = "event-types", visible_alias = "event_types")]
    EventTypes {
        /// An event type; without it, every type is listed.
        name: Option<String>,
    },
    /// Publish an event for fan-out to subscribed webhooks.
    Publish {
        event_type: String,
        /// The event payload: JSON text, or @FILE to read it from a file.
        #[arg(long)]
        event: String,
    },
    /// Send one delivery again.
    Redeliver { id: String, event_id: String },
    /// Send every failed delivery since TIME (RFC 3339) again.
    Recover {
        id: String,
        #[arg(long)]
        since: String,
    },
    /// Run a local receiver that prints each delivery and checks its signatures.
    Listen {
        #[arg(long, default_value_t = 8081)]
        port: u16,
        /// The webhook's secret_token, to verify signatures.
        #[arg(long, env = "WEBHOOKS_LISTEN_SECRET")]
        secret: Option<String>,
    },
    /// Check a received delivery's signatures offline.
    Verify {
        #[arg(long)]
        secret: String,
        /// The exact body bytes received: @FILE, or the text itself.
        #[arg(long)]
        body: String,
        /// A received header, as 'Name: value'; repeat for each.
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
    },
    /// Print a shell completion script.
    Completions { shell: clap_complete::Shell },
    /// Move a DynamoDB table written by the first storage layout to the current one (log
    /// entries to time-ordered keys, subscriptions to webhook copies). Safe to run again and
    /// while the stack runs; uses the standard AWS credential chain.
    MigrateTable {
        /// The stack's table (its `TableName` output).
        #[arg(long, env = "TABLE_NAME")]
        table: String,
    },
    /// Serve the web console on loopback, forwarding its API calls to --endpoint (signed with
    /// SigV4 with --aws or an execute-api endpoint), so no credential reaches the browser.
    Console(ConsoleOptions),
}

#[derive(Debug, Args)]
pub struct ConsoleOptions {
    /// Loopback address to serve the console on (port 0 picks a free one).
    #[arg(long, default_value = DEFAULT_CONSOLE_LISTEN)]
    pub listen: SocketAddr,
}

#[derive(Debug, Args)]
pub struct Serve {
    /// Address to listen on. A non-loopback address requires WEBHOOKS_API_TOKEN.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Where the embedded store keeps webhooks, logs and pending deliveries.
    #[arg(long, default_value = ".webhooks")]
    pub data_dir: PathBuf,
    /// Refuse loopback targets too, to see the SSRF guard at work.
    #[arg(long)]
    pub deny_loopback: bool,
}
