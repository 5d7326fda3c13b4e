//! The SQS-triggered sender: fans events out to subscribed webhooks, signs, delivers and
//! schedules retries, reporting partial batch failures.
use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use webhooks::{delivery, sender_from_env, telemetry};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init_lambda();
    let sender = sender_from_env().await?;
    let sender = &sender;
    run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        delivery::handle_sqs_event(sender, event.payload, Some(event.context.deadline())).await
    }))
    .await
}
