//! DynamoDB's billing arithmetic, applied to the JSON wire format of requests and items:
//! item sizes, write and read request units, and which index an item lands in. The table and
//! its indexes are read from `infra/template.yaml`, so the figures follow the deployed layout.
//!
//! Rules (developer guide, "Item sizes and formats" and "Read/write capacity mode", read
//! 2026-12-01): an item is the sum of its attribute names and values; a string is its UTF-8
//! bytes, a number about one byte per two significant digits plus one, binary its raw bytes,
//! BOOL and NULL one byte, a List or Map 3 bytes plus one byte per element plus the elements
//! (a Map's elements with their names). One WRU per started 1 KB of the larger of the old and
//! new item, per item and per index the item is in; one RRU per started 4 KB read strongly
//! consistent, half that eventually consistent; transactions cost twice.

use std::collections::BTreeSet;

use base64::Engine;
use serde_json::{Map, Value};

/// An item in DynamoDB's JSON wire format: attribute name → `{"S": ...}` and so on.
pub type Item = Map<String, Value>;

pub const WRITE_UNIT_BYTES: u64 = 1024;
pub const READ_UNIT_BYTES: u64 = 4096;

#[derive(Debug, Clone, PartialEq)]
pub enum Projection {
    All,
    KeysOnly,
    Include(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Index {
    pub name: String,
    pub hash: String,
    pub range: Option<String>,
    pub projection: Projection,
}

/// The table's key and its secondary indexes, as the template declares them.
#[derive(Debug, Clone, PartialEq)]
pub struct Schema {
    pub hash: String,
    pub range: Option<String>,
    pub indexes: Vec<Index>,
}

impl Schema {
    /// The first `AWS::DynamoDB::Table` in a CloudFormation/SAM template.
    pub fn from_template(yaml: &str) -> Result<Self, String> {
        let template = parse_template(yaml)?;
        let resources = template["Resources"].as_object().ok_or("template: no Resources")?;
        let table = resources
            .values()
            .find(|r| r["Type"] == "AWS::DynamoDB::Table")
            .ok_or("template: no AWS::DynamoDB::Table")?;
        let properties = &table["Properties"];
        let (hash, range) = key_schema(&properties["KeySchema"])?;
        let mut indexes = Vec::new();
        for kind in ["GlobalSecondaryIndexes", "LocalSecondaryIndexes"] {
            for index in properties[kind].as_array().into_iter().flatten() {
                let (index_hash, index_range) = key_schema(&index["KeySchema"])?;
                let projection = match index["Projection"]["ProjectionType"].as_str().unwrap_or("KEYS_ONLY") {
                    "ALL" => Projection::All,
                    "INCLUDE" => Projection::Include(
                        index["Projection"]["NonKeyAttributes"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|a| a.as_str().map(str::to_owned))
                            .collect(),
                    ),
                    _ => Projection::KeysOnly,
                };
                indexes.push(Index {
                    name: index["IndexName"].as_str().unwrap_or_default().to_owned(),
                    hash: index_hash,
                    range: index_range,
                    projection,
                });
            }
        }
        Ok(Self { hash, range, indexes })
    }

    /// The attributes of `item` that make its primary key.
    pub fn key_of(&self, item: &Item) -> Item {
        [Some(&self.hash), self.range.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|name| item.get(name).map(|v| (name.clone(), v.clone())))
            .collect()
    }

    /// A primary key as one comparable string.
    pub fn key_string(&self, key: &Item) -> String {
        let part = |name: &Option<&String>| name.and_then(|n| key.get(n)).map(Value::to_string).unwrap_or_default();
        format!("{}\u{0}{}", part(&Some(&self.hash)), part(&self.range.as_ref()))
    }

    /// The entry `item` has in `index`, if it has both of the index's key attributes.
    pub fn projected(&self, index: &Index, item: &Item) -> Option<Item> {
        let keys = [Some(&index.hash), index.range.as_ref()];
        if keys.iter().flatten().any(|name| !item.contains_key(*name)) {
            return None;
        }
        let mut wanted: BTreeSet<&str> =
            [Some(&self.hash), self.range.as_ref()].into_iter().chain(keys).flatten().map(String::as_str).collect();
        match &index.projection {
            Projection::All => return Some(item.clone()),
            Projection::KeysOnly => {}
            Projection::Include(extra) => wanted.extend(extra.iter().map(String::as_str)),
        }
        Some(
            item.iter()
                .filter(|(name, _)| wanted.contains(name.as_str()))
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect(),
        )
    }

    /// WRU of one successful write that changed the item from `old` to `new` (`None`: absent),
    /// on the table and on every index the change touches. Not doubled for transactions.
    pub fn write_units(&self, old: Option<&Item>, new: Option<&Item>) -> f64 {
        let size = |item: Option<&Item>| item.map(item_size).unwrap_or(0);
        let mut units = write_units_for(size(old).max(size(new)));
        for index in &self.indexes {
            let before = old.and_then(|item| self.projected(index, item));
            let after = new.and_then(|item| self.projected(index, item));
            units += match (&before, &after) {
                (None, None) => 0.0,
                (Some(entry), None) | (None, Some(entry)) => write_units_for(item_size(entry)),
                (Some(before), Some(after)) => {
                    let index_key = |entry: &Item| {
                        [Some(&index.hash), index.range.as_ref()]
                            .into_iter()
                            .flatten()
                            .map(|n| entry.get(n).cloned())
                            .collect::<Vec<_>>()
                    };
                    if index_key(before) != index_key(after) {
                        // A changed index key is a delete of the old entry and a put of the new.
                        write_units_for(item_size(before)) + write_units_for(item_size(after))
                    } else if before != after {
                        write_units_for(item_size(before).max(item_size(after)))
                    } else {
                        0.0
                    }
                }
            };
        }
        units
    }
}

/// What one item of a write request is charged: the change on the table and its indexes when
/// it succeeded; when its condition failed (or its transaction was cancelled), the existing
/// item's size on the table alone; twice inside a transaction (prepare and commit).
pub fn charged_write(
    schema: &Schema,
    old: Option<&Item>,
    new: Option<&Item>,
    applied: bool,
    transactional: bool,
) -> f64 {
    let units = if applied { schema.write_units(old, new) } else { write_units_for(old.map(item_size).unwrap_or(0)) };
    if transactional { units * 2.0 } else { units }
}

/// One WRU per started KB; a write of nothing (a delete of an absent item) still costs one.
pub fn write_units_for(bytes: u64) -> f64 {
    bytes.div_ceil(WRITE_UNIT_BYTES).max(1) as f64
}

/// One RRU per started 4 KB strongly consistent, half that eventually consistent; at least one
/// unit per read, even of nothing.
pub fn read_units_for(bytes: u64, consistent: bool) -> f64 {
    let units = bytes.div_ceil(READ_UNIT_BYTES).max(1) as f64;
    if consistent { units } else { units / 2.0 }
}

pub fn item_size(item: &Item) -> u64 {
    item.iter().map(|(name, value)| name.len() as u64 + value_size(value)).sum()
}

/// The size of one attribute value in the wire format, without its name.
pub fn value_size(value: &Value) -> u64 {
    let Some((kind, inner)) = value.as_object().and_then(|o| o.iter().next()) else {
        return 0;
    };
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let elements = || inner.as_array().into_iter().flatten();
    match kind.as_str() {
        "S" => text(inner).len() as u64,
        "N" => number_size(&text(inner)),
        "B" => binary_size(&text(inner)),
        "BOOL" | "NULL" => 1,
        "SS" => elements().map(|e| text(e).len() as u64).sum(),
        "NS" => elements().map(|e| number_size(&text(e))).sum(),
        "BS" => elements().map(|e| binary_size(&text(e))).sum(),
        "L" => 3 + elements().map(|e| value_size(e) + 1).sum::<u64>(),
        "M" => {
            3 + inner
                .as_object()
                .into_iter()
                .flatten()
                .map(|(name, v)| name.len() as u64 + value_size(v) + 1)
                .sum::<u64>()
        }
        _ => 0,
    }
}

/// About one byte per two significant digits, plus one; leading and trailing zeros trimmed.
pub fn number_size(number: &str) -> u64 {
    let mantissa = number.split(['e', 'E']).next().unwrap_or_default();
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let significant = digits.trim_start_matches('0').trim_end_matches('0').len().max(1) as u64;
    significant.div_ceil(2) + 1
}

fn binary_size(encoded: &str) -> u64 {
    base64::engine::general_purpose::STANDARD.decode(encoded).map(|b| b.len()).unwrap_or(encoded.len()) as u64
}

fn key_schema(schema: &Value) -> Result<(String, Option<String>), String> {
    let mut hash = None;
    let mut range = None;
    for element in schema.as_array().into_iter().flatten() {
        let name = element["AttributeName"].as_str().map(str::to_owned);
        match element["KeyType"].as_str() {
            Some("HASH") => hash = name,
            Some("RANGE") => range = name,
            _ => {}
        }
    }
    Ok((hash.ok_or("template: a KeySchema without a HASH key")?, range))
}

/// CloudFormation's short tags (`!Ref X`) become `{"!Ref": X}`; only the DynamoDB and function
/// properties are read, and those are plain values.
fn yaml_to_json(value: &serde_norway::Value) -> Result<Value, String> {
    use serde_norway::Value as Y;
    Ok(match value {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(*b),
        Y::Number(n) => serde_json::from_str(&n.to_string()).unwrap_or(Value::Null),
        Y::String(s) => Value::String(s.clone()),
        Y::Sequence(items) => Value::Array(items.iter().map(yaml_to_json).collect::<Result<_, _>>()?),
        Y::Mapping(entries) => {
            let mut object = Map::new();
            for (key, value) in entries {
                let key = match key {
                    Y::String(s) => s.clone(),
                    other => serde_norway::to_string(other).map_err(|e| e.to_string())?.trim().to_owned(),
                };
                object.insert(key, yaml_to_json(value)?);
            }
            Value::Object(object)
        }
        Y::Tagged(tagged) => {
            let mut object = Map::new();
            object.insert(format!("!{}", tagged.tag.to_string().trim_start_matches('!')), yaml_to_json(&tagged.value)?);
            Value::Object(object)
        }
    })
}

fn parse_template(yaml: &str) -> Result<Value, String> {
    serde_norway::from_str::<serde_norway::Value>(yaml)
        .map_err(|e| format!("template: {e}"))
        .and_then(|v| yaml_to_json(&v))
}

/// The function resource whose build metadata names `binary`.
fn function_resource<'t>(template: &'t Value, binary: &str) -> Option<&'t Value> {
    template["Resources"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(_, r)| r)
        .find(|r| r["Metadata"]["BuildProperties"]["Binary"] == binary)
}

/// A numeric property (`MemorySize`, `Timeout`) of the function whose build metadata names
/// `binary`, else the template's `Globals.Function` value.
pub fn function_property(yaml: &str, binary: &str, property: &str) -> Result<u64, String> {
    let template = parse_template(yaml)?;
    let function = function_resource(&template, binary);
    function
        .and_then(|f| f["Properties"][property].as_u64())
        .or_else(|| template["Globals"]["Function"][property].as_u64())
        .ok_or_else(|| format!("template: no {property} for the {binary} function"))
}

/// The environment a deployed function gets by default: `Globals.Function` and then the
/// function's own variables, each a literal or a `!Ref` to a parameter with a default (others,
/// such as references to resources, are left out).
pub fn function_environment(yaml: &str, binary: &str) -> Result<Vec<(String, String)>, String> {
    let template = parse_template(yaml)?;
    let function = function_resource(&template, binary);
    let resolve = |value: &Value| match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Object(o) => {
            let default = &template["Parameters"][o.get("!Ref")?.as_str()?]["Default"];
            match default {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            }
        }
        _ => None,
    };
    let mut environment = Vec::new();
    for variables in [
        &template["Globals"]["Function"]["Environment"]["Variables"],
        function.map_or(&Value::Null, |f| &f["Properties"]["Environment"]["Variables"]),
    ] {
        for (name, value) in variables.as_object().into_iter().flatten() {
            if let Some(value) = resolve(value) {
                environment.push((name.clone(), value));
            }
        }
    }
    Ok(environment)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn item(value: Value) -> Item {
        value.as_object().cloned().unwrap_or_default()
    }

    fn schema(projection: Projection) -> Schema {
        Schema {
            hash: "pk".into(),
            range: Some("sk".into()),
            indexes: vec![Index {
                name: "gsi1".into(),
                hash: "gsi1pk".into(),
                range: Some("gsi1sk".into()),
                projection,
            }],
        }
    }

    #[test]
    fn an_items_size_adds_names_values_and_nested_overheads() {
        let known = item(json!({
            "pk": {"S": "WEBHOOK#1"},          // 2 + 9
            "n": {"N": "12345"},               // 1 + ceil(5 / 2) + 1 = 5
            "z": {"N": "-0.00120"},            // 1 + (digits "12") 1 + 1 = 3
            "ok": {"BOOL": true},              // 2 + 1
            "b": {"B": "AAEC"},                // 1 + 3 raw bytes
            "l": {"L": [{"S": "ab"}, {"NULL": true}]}, // 1 + 3 + (2 + 1) + (1 + 1) = 9
            "m": {"M": {"k": {"S": "v"}}},     // 1 + 3 + (1 + 1 + 1) = 7
            "é": {"S": "ü"}                    // 2 + 2
        }));
        assert_eq!(item_size(&known), 11 + 5 + 3 + 3 + 4 + 9 + 7 + 4);
    }

    #[test]
    fn write_units_round_each_started_kilobyte_up_and_never_go_below_one() {
        assert_eq!(write_units_for(0), 1.0);
        assert_eq!(write_units_for(1024), 1.0);
        assert_eq!(write_units_for(1025), 2.0);
        assert_eq!(read_units_for(4097, true), 2.0);
        assert_eq!(read_units_for(10, false), 0.5);
    }

    #[test]
    fn a_write_costs_the_larger_item_on_the_table_and_again_on_an_index_projecting_all() {
        let schema = schema(Projection::All);
        let filler = "x".repeat(1500);
        let old = item(json!({"pk": {"S": "a"}, "sk": {"S": "b"}, "gsi1pk": {"S": "g"}, "gsi1sk": {"S": "1"}}));
        let new = item(
            json!({"pk": {"S": "a"}, "sk": {"S": "b"}, "gsi1pk": {"S": "g"}, "gsi1sk": {"S": "1"}, "p": {"S": filler}}),
        );
        // 2 KB on the table, 2 KB on the index (same index key, projected attributes changed).
        assert_eq!(schema.write_units(Some(&old), Some(&new)), 4.0);
        // A new item outside the index (no gsi1 keys) writes the table alone.
        let plain = item(json!({"pk": {"S": "a"}, "sk": {"S": "c"}}));
        assert_eq!(schema.write_units(None, Some(&plain)), 1.0);
    }

    #[test]
    fn a_transaction_doubles_and_a_failed_condition_costs_the_existing_item_on_the_table() {
        let schema = schema(Projection::All);
        let old = item(
            json!({"pk": {"S": "a"}, "sk": {"S": "b"}, "gsi1pk": {"S": "g"}, "gsi1sk": {"S": "1"}, "p": {"S": "x".repeat(1100)}}),
        );
        let new = item(json!({"pk": {"S": "a"}, "sk": {"S": "b"}, "v": {"N": "2"}}));
        // 2 KB on the table, and the index entry deleted (2 KB): 4, twice in a transaction.
        assert_eq!(charged_write(&schema, Some(&old), Some(&new), true, false), 4.0);
        assert_eq!(charged_write(&schema, Some(&old), Some(&new), true, true), 8.0);
        assert_eq!(charged_write(&schema, Some(&old), Some(&new), false, false), 2.0);
        assert_eq!(charged_write(&schema, None, Some(&new), false, true), 2.0);
    }

    #[test]
    fn a_keys_only_index_is_written_only_when_its_entry_changes() {
        let schema = schema(Projection::KeysOnly);
        let old = item(
            json!({"pk": {"S": "a"}, "sk": {"S": "b"}, "gsi1pk": {"S": "g"}, "gsi1sk": {"S": "1"}, "state": {"S": "queued"}}),
        );
        let mut same_keys = old.clone();
        same_keys.insert("state".into(), json!({"S": "succeeded"}));
        assert_eq!(schema.write_units(Some(&old), Some(&same_keys)), 1.0, "index entry unchanged");
        let mut moved = old.clone();
        moved.insert("gsi1sk".into(), json!({"S": "2"}));
        assert_eq!(schema.write_units(Some(&old), Some(&moved)), 3.0, "table + index delete + index put");
    }

    #[test]
    fn the_template_declares_the_table_key_and_its_index() {
        let template = include_str!("../../../infra/template.yaml");
        let schema = Schema::from_template(template).expect("the template parses");
        assert_eq!(schema.hash, "pk");
        assert!(function_property(template, "sender", "MemorySize").expect("memory") >= 128);
        assert!(function_property(template, "sender", "Timeout").expect("timeout") >= 1);
        let environment = function_environment(template, "sender").expect("environment");
        assert!(environment.iter().any(|(name, _)| name == "RUST_LOG"), "{environment:?}");
    }
}
