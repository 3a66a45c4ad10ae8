package policy

# Hand-written policy exercising the engine's result handling.

api_version := "0.12.0"
framework_version := "0.5.0"

# Policy results are overlaid on the API defaults (env_list, allow_stdio_access).
create_container := {"allowed": true}
exec_in_container := {"allowed": true}
exec_external := {"allowed": true, "env_list": ["ONLY=1"]}

# Metadata written by a denied rule is still committed ...
mount_device := {"allowed": false, "metadata": [{"name": "custom", "action": "add", "key": "seen", "value": input.target}]}
# ... and visible to later queries.
dump_stacks := {"allowed": true} if data.metadata.custom.seen == "/run/mounts/scsi/m1"
default dump_stacks := {"allowed": false}

# Set-typed metadata.
mount_overlay := {"allowed": true, "metadata": [{"name": "things", "type": "set", "action": "add", "value": input.containerID}]}
get_properties := {"allowed": true} if count(data.metadata.things) == 1
default get_properties := {"allowed": false}

# Not an object -> policy error.
runtime_logging := true

# Missing "allowed" where the API defaults provide none.
rw_mount_device := {"something": 1}

# "allowed" that is not a boolean.
plan9_mount := {"allowed": "yes"}

# An adding op on an existing key is an error.
scratch_mount := {"allowed": true, "metadata": [{"name": "custom", "action": "add", "key": "seen", "value": 1}]}

# Results only partially specified: defaults fill in allowed.
host_network := {"note": "no allowed key"}
shutdown_container := {"note": "no allowed key"}

# The parameter helper used by fragments.
registry_changes := {"allowed": data.framework.extract_parameter("a", {"a": true}, {"a": {"default": false}})}
log_provider := {"allowed": data.framework.extract_parameter("b", {"x": 1}, {"b": {"default": true}})}
mount_cims := {"allowed": data.framework.extract_parameter("c", {}, {"c": {}})}

reason := {"errors": ["custom reason"], "error_objects": null}
