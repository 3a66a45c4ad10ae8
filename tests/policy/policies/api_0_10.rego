package policy

# api_svn 0.10.0 / framework_svn 0.3.0 (deprecated keys); only device/overlay rules defined.

api_svn := "0.10.0"
framework_svn := "0.3.0"

containers := [
  {"allow_elevated":false,"allow_stdio_access":true,"capabilities":{"ambient":[],"bounding":[],"effective":[],"inheritable":[],"permitted":[]},"command":["bash"],"env_rules":[],"exec_processes":[],"layers":["2d0e997f3fd48dab852934b39498875fb966c5472e789ebd23b02e13e8b9be9c"],"mounts":[],"no_new_privileges":false,"seccomp_profile_sha256":"","signals":[],"user":{"group_idnames":[{"pattern":"","strategy":"any"}],"umask":"0022","user_idname":{"pattern":"","strategy":"any"}},"working_dir":"/"},
]

allow_properties_access := true
allow_dump_stacks := false
allow_runtime_logging := true
allow_host_network := false
allow_environment_variable_dropping := false
allow_unencrypted_scratch := false
allow_capability_dropping := false

mount_device := data.framework.mount_device
unmount_device := data.framework.unmount_device
mount_overlay := data.framework.mount_overlay
unmount_overlay := data.framework.unmount_overlay
reason := data.framework.reason
