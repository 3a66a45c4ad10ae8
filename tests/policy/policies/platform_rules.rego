package policy

# Policy with platform_rules applied to every container.

api_version := "0.12.0"
framework_version := "0.5.0"

containers := [
  {"id":"pause","name":"pause","allow_elevated":false,"allow_stdio_access":false,"capabilities":{"bounding":["CAP_CHOWN","CAP_DAC_OVERRIDE","CAP_FSETID","CAP_FOWNER","CAP_MKNOD","CAP_NET_RAW","CAP_SETGID","CAP_SETUID","CAP_SETFCAP","CAP_SETPCAP","CAP_NET_BIND_SERVICE","CAP_SYS_CHROOT","CAP_KILL","CAP_AUDIT_WRITE"],"effective":["CAP_CHOWN","CAP_DAC_OVERRIDE","CAP_FSETID","CAP_FOWNER","CAP_MKNOD","CAP_NET_RAW","CAP_SETGID","CAP_SETUID","CAP_SETFCAP","CAP_SETPCAP","CAP_NET_BIND_SERVICE","CAP_SYS_CHROOT","CAP_KILL","CAP_AUDIT_WRITE"],"inheritable":[],"permitted":["CAP_CHOWN","CAP_DAC_OVERRIDE","CAP_FSETID","CAP_FOWNER","CAP_MKNOD","CAP_NET_RAW","CAP_SETGID","CAP_SETUID","CAP_SETFCAP","CAP_SETPCAP","CAP_NET_BIND_SERVICE","CAP_SYS_CHROOT","CAP_KILL","CAP_AUDIT_WRITE"],"ambient":[]},"command":["/pause"],"env_rules":[{"pattern":"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","strategy":"string","required":true},{"pattern":"TERM=xterm","strategy":"string","required":false}],"exec_processes":[],"layers":["92f3d59657bcdfacec1e6448d2ee54ccc1180aeb4486d097114f1111386b2ce1"],"mounts":[],"no_new_privileges":false,"seccomp_profile_sha256":"","signals":[],"user":{"group_idnames":[{"pattern":"65535","strategy":"id"}],"umask":"0022","user_idname":{"pattern":"65535","strategy":"id"}},"working_dir":"/"},
]

allow_properties_access := true
allow_dump_stacks := false
allow_runtime_logging := true
allow_host_network := false
allow_environment_variable_dropping := false
allow_unencrypted_scratch := false
allow_capability_dropping := false

platform_rules := [
  {"env_rules":[{"name":"(?i)(FABRIC)_.+","name_strategy":"re2","value":".+","value_strategy":"re2","required":false}],"mounts":[{"destination":"/var/run/secrets/kubernetes.io/serviceaccount","options":["rbind","rshared","ro"],"source":"sandbox:///tmp/atlas/emptydir/.+","type":"bind"}]},
]

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
