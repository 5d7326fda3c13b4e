//! The application: its store, queue and configuration, shared by every handler and built
//! once per process (per Lambda cold start).

use std::sync::Arc;

use crate::config::{Config, ConfigError};
use crate::delivery::{CidrList, Sender};
use crate::queue::{Queue, SqsDeadLetters, SqsQueue, UnconfiguredQueue};
use crate::store::{DynamoStore, Store};

#[derive(Clone)]
pub struct App {
    pub store: Arc<dyn Store>,
    pub queue: Arc<dyn Queue>,
    pub config: Arc<Config>,
}

/// What a Lambda function needs configured; anything it needs and lacks fails the cold start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    Store,
    StoreAndQueue,
}

impl App {
    pub fn new(store: Arc<dyn Store>, queue: Arc<dyn Queue>, config: Config) -> Self {
        Self { store, queue, config: Arc::new(config) }
    }

    /// The AWS wiring: DynamoDB store and SQS queue from the environment (SPEC §8).
    pub async fn from_env(needs: Needs) -> Result<Self, ConfigError> {
        Self::from_env_inner(needs)
            .await
            .inspect_err(|err| tracing::error!(error = %err, "configuration is incomplete"))
    }

    async fn from_env_inner(needs: Needs) -> Result<Self, ConfigError> {
        let config = Config::from_env()?;
        let table = config.require_table_name()?.to_owned();
        let queue_url = match needs {
            Needs::StoreAndQueue => Some(config.require_events_queue_url()?.to_owned()),
            Needs::Store => None,
        };
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let store = Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), table));
        let queue: Arc<dyn Queue> = match queue_url {
            Some(url) => Arc::new(SqsQueue::new(aws_sdk_sqs::Client::new(&sdk), url)),
            None => Arc::new(UnconfiguredQueue),
        };
        Ok(Self::new(store, queue, config))
    }
}

/// The sender Lambda's wiring: DynamoDB store, SQS events queue and dead-letter queue.
pub async fn sender_from_env() -> Result<Sender, Box<dyn std::error::Error + Send + Sync>> {
    let config = Config::from_env().inspect_err(|err| tracing::error!(error = %err, "configuration is incomplete"))?;
    let required = (|| {
        Ok::<_, ConfigError>((
            config.require_table_name()?.to_owned(),
            config.require_events_queue_url()?.to_owned(),
            config.require_dead_letter_queue_url()?.to_owned(),
        ))
    })();
    let (table, queue_url, dead_letter_url) =
        required.inspect_err(|err| tracing::error!(error = %err, "configuration is incomplete"))?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let store = Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), table));
    let queue = Arc::new(SqsQueue::new(sqs.clone(), queue_url));
    let dead_letters = Arc::new(SqsDeadLetters::new(sqs, dead_letter_url));
    Ok(Sender::new(store, queue, dead_letters, Arc::new(config), &CidrList::default())?)
}
