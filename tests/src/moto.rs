//! moto, the DynamoDB + SQS emulator `scripts/test` starts on loopback. A missing emulator
//! fails the test: a skipped adapter test would read as a passing one.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_sqs::config::Credentials;
use uuid::Uuid;
use webhooks::store::{DynamoStore, TableDefinition};

pub fn endpoint() -> String {
    match std::env::var("WEBHOOKS_TEST_MOTO_URL").or_else(|_| std::env::var("AWS_ENDPOINT_URL")) {
        Ok(url) if !url.trim().is_empty() => url,
        _ => {
            panic!("no moto emulator: run the suite with scripts/test (it starts moto and sets WEBHOOKS_TEST_MOTO_URL)")
        }
    }
}

/// SDK settings pointing at moto, every value explicit so tests never read the environment's
/// credentials or probe the instance-metadata address.
pub fn sdk_config() -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::SharedCredentialsProvider::new(Credentials::new(
            "test", "test", None, None, "moto",
        )))
        .endpoint_url(endpoint())
        .build()
}

/// A DynamoDB store on a table of its own, created by the product's table definition.
pub async fn dynamo_store() -> (DynamoStore, String) {
    let client = aws_sdk_dynamodb::Client::new(&sdk_config());
    let table = format!("webhooks-test-{}", Uuid::new_v4());
    TableDefinition::create(&client, &table).await.expect("create table");
    (DynamoStore::new(client, table.clone()), table)
}

/// A fresh SQS queue; returns its URL.
pub async fn queue(prefix: &str) -> String {
    let client = aws_sdk_sqs::Client::new(&sdk_config());
    let created =
        client.create_queue().queue_name(format!("{prefix}-{}", Uuid::new_v4())).send().await.expect("create queue");
    created.queue_url().expect("queue url").to_owned()
}

/// Every message now on a queue, with its `reason` attribute if any, removed from the queue.
pub async fn drain(queue_url: &str) -> Vec<(String, String, Option<String>)> {
    let client = aws_sdk_sqs::Client::new(&sdk_config());
    let mut messages = Vec::new();
    loop {
        let received = client
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .wait_time_seconds(0)
            .send()
            .await
            .expect("receive");
        let batch = received.messages.unwrap_or_default();
        if batch.is_empty() {
            return messages;
        }
        for message in batch {
            let reason = message
                .message_attributes()
                .and_then(|a| a.get("reason"))
                .and_then(|v| v.string_value())
                .map(str::to_owned);
            messages.push((
                message.message_id().unwrap_or_default().to_owned(),
                message.body().unwrap_or_default().to_owned(),
                reason,
            ));
            if let Some(handle) = message.receipt_handle() {
                client.delete_message().queue_url(queue_url).receipt_handle(handle).send().await.expect("delete");
            }
        }
    }
}
