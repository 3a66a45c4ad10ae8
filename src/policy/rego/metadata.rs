//! Metadata operations a rule's result carries (SP §3.4): named maps and sets in
//! `data.metadata` that persist between decisions (mounted layers, matched containers, started
//! containers, loaded fragments).

use serde_json::{Map, Value};

/// Applies `ops` (the result's `metadata` list) to `metadata` in order. Not atomic: operations
/// before a failing one stay applied, as in the original.
///
/// Errors: the original's messages for a malformed operation, a `map` add of an existing key,
/// or an item used both as a map and a set.
pub fn apply(metadata: &mut Value, ops: &Value) -> Result<(), String> {
    let Some(ops) = ops.as_array() else {
        return Err("error loading metadata array: invalid type".into());
    };
    if !metadata.is_object() {
        *metadata = Value::Object(Map::new());
    }
    for op in ops {
        apply_one(metadata, op)?;
    }
    Ok(())
}

fn apply_one(metadata: &mut Value, op: &Value) -> Result<(), String> {
    let field = |k: &str, missing: &str| -> Result<String, String> {
        op.get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| missing.to_string())
    };
    let name = field("name", "unable to load metadata name")?;
    let action = field("action", "unable to load metadata action")?;
    let kind = match op.get("type") {
        None => "map".to_string(),
        Some(Value::String(t)) => t.clone(),
        Some(_) => return Err("unable to load metadata type".into()),
    };
    let items = metadata
        .as_object_mut()
        .ok_or_else(|| "metadata is not an object".to_string())?;
    match kind.as_str() {
        "map" => {
            let key = match op.get("key") {
                None => return Err("missing metadata key".into()),
                Some(Value::String(k)) => k.clone(),
                Some(_) => return Err("unable to load metadata key".into()),
            };
            let item = items
                .entry(name.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            let Some(map) = item.as_object_mut() else {
                return Err(format!("metadata {name} has the wrong type (not a map)"));
            };
            match action.as_str() {
                "add" => {
                    let value = op.get("value").ok_or("missing metadata value")?;
                    if map.contains_key(&key) {
                        return Err(format!(
                            "cannot add metadata value, key {name}[{key}] already exists"
                        ));
                    }
                    map.insert(key, value.clone());
                }
                "update" => {
                    let value = op.get("value").ok_or("missing metadata value")?;
                    map.insert(key, value.clone());
                }
                "remove" => {
                    map.remove(&key);
                }
                other => return Err(format!("unrecognized metadata action: {other}")),
            }
        }
        "set" => {
            let value = op.get("value").ok_or("missing metadata value")?;
            let item = items
                .entry(name.clone())
                .or_insert_with(|| Value::Array(Vec::new()));
            let Some(set) = item.as_array_mut() else {
                return Err(format!("metadata {name} has the wrong type (not a set)"));
            };
            match action.as_str() {
                "add" => {
                    if !set.contains(value) {
                        set.push(value.clone());
                    }
                }
                "remove" => set.retain(|v| v != value),
                other => return Err(format!("unrecognized metadata action: {other}")),
            }
        }
        other => return Err(format!("unrecognized metadata type: {other}")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn maps_and_sets_follow_the_originals_rules() {
        let mut m = json!({"operatingsystem": {"ostype": "linux"}});
        apply(
            &mut m,
            &json!([
                {"name": "devices", "action": "add", "key": "/t", "value": "h1"},
                {"name": "frags", "type": "set", "action": "add", "value": {"a": 1}},
                {"name": "frags", "type": "set", "action": "add", "value": {"a": 1}},
            ]),
        )
        .unwrap();
        assert_eq!(m["devices"], json!({"/t": "h1"}));
        assert_eq!(m["frags"], json!([{"a": 1}]));
        let err = apply(
            &mut m,
            &json!([{"name": "devices", "action": "add", "key": "/t", "value": "h2"}]),
        )
        .unwrap_err();
        assert_eq!(
            err,
            "cannot add metadata value, key devices[/t] already exists"
        );
        apply(
            &mut m,
            &json!([
                {"name": "devices", "action": "update", "key": "/t", "value": "h2"},
                {"name": "frags", "type": "set", "action": "remove", "value": {"a": 1}},
            ]),
        )
        .unwrap();
        assert_eq!(m["devices"]["/t"], "h2");
        assert_eq!(m["frags"], json!([]));
        // Not atomic: the first op stays when the second fails.
        let err = apply(
            &mut m,
            &json!([
                {"name": "devices", "action": "remove", "key": "/t"},
                {"name": "devices", "action": "explode", "key": "/t", "value": 1},
            ]),
        )
        .unwrap_err();
        assert_eq!(err, "unrecognized metadata action: explode");
        assert_eq!(m["devices"], json!({}));
        assert!(apply(
            &mut m,
            &json!([{"name": "frags", "action": "add", "key": "k", "value": 1}])
        )
        .unwrap_err()
        .contains("wrong type"));
        assert_eq!(
            apply(
                &mut m,
                &json!([{"name": "x", "type": "set", "action": "update", "value": 1}])
            )
            .unwrap_err(),
            "unrecognized metadata action: update"
        );
        assert_eq!(
            apply(&mut m, &json!([{"action": "add"}])).unwrap_err(),
            "unable to load metadata name"
        );
    }
}
