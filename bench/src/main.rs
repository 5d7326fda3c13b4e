//! `webhooks-bench`: measurements that print figures (JSON, one object per run), for
//! `scripts/bench` to lay side by side. Each mode runs in its own process so its CPU time and
//! peak RSS are its own.

mod aws_cost;
mod coldstart;
mod fanout;
mod process;
mod receiver;
mod serve;
mod throughput;

use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// A minimal HTTP receiver answering 200 at once.
    Receiver {
        #[arg(long)]
        port: u16,
        /// Answer after this long (a slow receiver).
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
    },
    /// Plain POSTs of delivery-sized bodies from one pooled hyper client (the delivery client's
    /// transport): the limit to compare with.
    Raw {
        #[arg(long)]
        url: String,
        #[arg(long)]
        requests: usize,
        #[arg(long)]
        concurrency: usize,
        #[arg(long, default_value_t = 1024)]
        body_bytes: usize,
    },
    /// The delivery engine (fan-out, signing, log writes on the embedded store, HTTP).
    Engine {
        #[arg(long)]
        url: String,
        #[arg(long)]
        events: usize,
        #[arg(long)]
        subscribers: usize,
        #[arg(long)]
        concurrency: usize,
        #[arg(long, default_value_t = 1024)]
        body_bytes: usize,
    },
    /// SQS batches of `events` events x `subscribers` webhooks through the Lambda handler,
    /// repeated, printing each batch's time and the process's resident memory.
    Batches {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 10)]
        events: usize,
        #[arg(long, default_value_t = 10)]
        subscribers: usize,
        #[arg(long, default_value_t = 20)]
        batches: usize,
    },
    /// Time to find an event type's subscribers among many webhooks.
    Fanout {
        #[arg(long, value_parser = ["embedded", "dynamodb"])]
        store: String,
        #[arg(long)]
        total: usize,
        #[arg(long, default_value_t = 10)]
        subscribed: usize,
        #[arg(long, default_value_t = 50)]
        repeats: usize,
    },
    /// `webhooks serve` end to end from outside: `live` publishes to `/events` while it
    /// delivers (CPU seconds per 1 000 deliveries, latency); `backlog` starts it with every
    /// delivery already pending (peak RSS, drain rate).
    Serve {
        /// The `webhooks` binary (release).
        #[arg(long, default_value = "target/release/webhooks")]
        bin: String,
        #[arg(long, value_parser = ["live", "backlog"])]
        mode: String,
        #[arg(long)]
        events: usize,
        #[arg(long, default_value_t = 10)]
        subscribers: usize,
        #[arg(long, default_value_t = 8)]
        publishers: usize,
    },
    /// What a delivery costs in AWS: the real sender binary against moto (at AWS_ENDPOINT_URL),
    /// its DynamoDB request units, SQS requests, log bytes and Lambda time per delivery.
    AwsCost {
        /// The compiled sender Lambda (target/{debug,release}/sender).
        #[arg(long, default_value = "target/release/sender")]
        sender: std::path::PathBuf,
        #[arg(long, default_value = "infra/template.yaml")]
        template: std::path::PathBuf,
        #[arg(long, env = "AWS_ENDPOINT_URL")]
        moto: String,
        /// Which scenarios to run, in order (default: all three).
        #[arg(long, value_enum, value_delimiter = ',', default_values_t = [aws_cost::Scenario::Happy, aws_cost::Scenario::Retry, aws_cost::Scenario::Ping])]
        scenarios: Vec<aws_cost::Scenario>,
        #[arg(long, default_value_t = 100)]
        events: usize,
        #[arg(long, default_value_t = 10)]
        subscribers: usize,
        /// Pings per webhook in the ping scenario.
        #[arg(long, default_value_t = 10)]
        pings: usize,
        /// The event envelope's size in JSON.
        #[arg(long, default_value_t = 1024)]
        payload_bytes: usize,
    },
    /// Each Lambda binary's time from exec to its first Runtime API poll, and its size.
    Coldstart {
        #[arg(long)]
        dir: std::path::PathBuf,
        #[arg(long, default_value_t = 7)]
        runs: usize,
        #[arg(required = true)]
        binaries: Vec<String>,
    },
}

#[tokio::main]
async fn main() {
    let result = match Cli::parse().mode {
        Mode::Receiver { port, delay_ms } => receiver::run(port, delay_ms).await,
        Mode::Batches { url, events, subscribers, batches } => {
            throughput::batches(&url, events, subscribers, batches).await
        }
        Mode::Raw { url, requests, concurrency, body_bytes } => {
            throughput::raw(&url, requests, concurrency, body_bytes).await
        }
        Mode::Engine { url, events, subscribers, concurrency, body_bytes } => {
            throughput::engine(&url, events, subscribers, concurrency, body_bytes).await
        }
        Mode::Fanout { store, total, subscribed, repeats } => fanout::run(&store, total, subscribed, repeats).await,
        Mode::Serve { bin, mode, events, subscribers, publishers } => {
            serve::run(&bin, mode == "backlog", events, subscribers, publishers).await
        }
        Mode::AwsCost { sender, template, moto, scenarios, events, subscribers, pings, payload_bytes } => {
            aws_cost::run(aws_cost::Options {
                sender,
                template,
                moto,
                scenarios,
                events,
                subscribers,
                pings,
                payload_bytes,
            })
            .await
        }
        Mode::Coldstart { dir, runs, binaries } => coldstart::run(&dir, runs, &binaries).await,
    };
    if let Err(message) = result {
        eprintln!("webhooks-bench: {message}");
        std::process::exit(1);
    }
}
