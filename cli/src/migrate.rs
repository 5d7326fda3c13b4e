//! `webhooks migrate-table`: moves a stack's table from the first storage layout to the
//! current one (docs/deploy.md, "Upgrading").

use serde_json::json;
use webhooks::store::migrate_legacy_layout;

pub async fn run(table: &str) -> Result<(), String> {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let report = migrate_legacy_layout(&client, table).await.map_err(|err| format!("migration of {table}: {err}"))?;
    let summary = json!({
        "table": table,
        "items_scanned": report.items_scanned,
        "log_entries_moved": report.log_entries_moved,
        "subscriptions_rewritten": report.subscriptions_rewritten,
    });
    println!("{}", serde_json::to_string_pretty(&summary).map_err(|err| err.to_string())?);
    Ok(())
}
