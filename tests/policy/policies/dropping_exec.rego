package policy

# Dropping enabled; one container with an exec process.

api_version := "0.12.0"
framework_version := "0.5.0"

fragments := [
]

containers := [
  {"id":"sx","name":"sx","allow_elevated":false,"allow_stdio_access":true,"capabilities":{"bounding":["CAP_CHOWN","CAP_KILL"],"effective":["CAP_CHOWN","CAP_KILL"],"inheritable":[],"permitted":["CAP_CHOWN","CAP_KILL"],"ambient":[]},"command":["/app"],"env_rules":[{"pattern":"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","strategy":"string","required":false},{"pattern":"A=1","strategy":"string","required":false}],"exec_processes":[{"command":["/x"],"signals":[]}],"layers":["07abf2bdab82263d77091b2603745d5a97d9b1bf5fe28c97c2d80f17b98506c1"],"mounts":[],"no_new_privileges":false,"seccomp_profile_sha256":"","signals":[],"user":{"group_idnames":[{"pattern":"65535","strategy":"id"}],"umask":"0022","user_idname":{"pattern":"65535","strategy":"id"}},"working_dir":"/"},
]

external_processes := [
]

allow_properties_access := true
allow_dump_stacks := false
allow_runtime_logging := true
allow_host_network := false
allow_environment_variable_dropping := true
allow_unencrypted_scratch := false
allow_capability_dropping := true

mount_device := data.framework.mount_device
rw_mount_device := data.framework.rw_mount_device
mount_blockdev := data.framework.mount_blockdev
unmount_device := data.framework.unmount_device
rw_unmount_device := data.framework.rw_unmount_device
unmount_blockdev := data.framework.unmount_blockdev
mount_overlay := data.framework.mount_overlay
unmount_overlay := data.framework.unmount_overlay
mount_cims := data.framework.mount_cims
registry_changes := data.framework.registry_changes
create_container := data.framework.create_container
exec_in_container := data.framework.exec_in_container
exec_external := data.framework.exec_external
shutdown_container := data.framework.shutdown_container
signal_container_process := data.framework.signal_container_process
plan9_mount := data.framework.plan9_mount
plan9_unmount := data.framework.plan9_unmount
get_properties := data.framework.get_properties
dump_stacks := data.framework.dump_stacks
runtime_logging := data.framework.runtime_logging
load_fragment := data.framework.load_fragment
scratch_mount := data.framework.scratch_mount
scratch_unmount := data.framework.scratch_unmount
log_provider := data.framework.log_provider
load_transparency_trust_list := data.framework.load_transparency_trust_list
host_network := data.framework.host_network
reason := data.framework.reason
