package policy

# Deny-all policy: every enforcement point refuses.

api_version := "0.12.0"
framework_version := "0.5.0"

mount_device := {"allowed": false}
rw_mount_device := {"allowed": false}
mount_blockdev := {"allowed": false}
unmount_device := {"allowed": false}
rw_unmount_device := {"allowed": false}
unmount_blockdev := {"allowed": false}
mount_overlay := {"allowed": false}
unmount_overlay := {"allowed": false}
mount_cims := {"allowed": false}
registry_changes := {"allowed": false}
create_container := {"allowed": false}
exec_in_container := {"allowed": false}
exec_external := {"allowed": false}
shutdown_container := {"allowed": false}
signal_container_process := {"allowed": false}
plan9_mount := {"allowed": false}
plan9_unmount := {"allowed": false}
get_properties := {"allowed": false}
dump_stacks := {"allowed": false}
runtime_logging := {"allowed": false}
load_fragment := {"allowed": false}
scratch_mount := {"allowed": false}
scratch_unmount := {"allowed": false}
log_provider := {"allowed": false}
load_transparency_trust_list := {"allowed": false}
host_network := {"allowed": false}

reason := {"errors": ["denied by the deny-all policy"], "error_objects": null}
