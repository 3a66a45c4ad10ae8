package policy

# Env and capability dropping enabled; unencrypted scratch allowed.

api_version := "0.12.0"
framework_version := "0.5.0"

fragments := [
]

containers := [
  {"id":"n0","name":"n0","allow_elevated":false,"allow_stdio_access":true,"capabilities":{"bounding":["CAP_CHOWN","CAP_KILL"],"effective":["CAP_CHOWN","CAP_KILL"],"inheritable":[],"permitted":["CAP_CHOWN","CAP_KILL"],"ambient":[]},"command":["/app"],"env_rules":[{"pattern":"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","strategy":"string","required":false},{"pattern":"A=1","strategy":"string","required":false}],"exec_processes":[],"layers":["39e1da7f709eb64084405cfbbe32676629d3adaca0ebf19810a4406626c64c24"],"mounts":[],"no_new_privileges":false,"seccomp_profile_sha256":"","signals":[],"user":{"group_idnames":[{"pattern":"65535","strategy":"id"}],"umask":"0022","user_idname":{"pattern":"65535","strategy":"id"}},"working_dir":"/"},
  {"id":"n1","name":"n1","allow_elevated":false,"allow_stdio_access":true,"capabilities":{"bounding":["CAP_CHOWN","CAP_KILL"],"effective":["CAP_CHOWN","CAP_KILL"],"inheritable":[],"permitted":["CAP_CHOWN","CAP_KILL"],"ambient":[]},"command":["/app"],"env_rules":[{"pattern":"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","strategy":"string","required":false},{"pattern":"A=1","strategy":"string","required":false},{"pattern":"B=1","strategy":"string","required":false},{"pattern":"B2=1","strategy":"string","required":false}],"exec_processes":[],"layers":["39e1da7f709eb64084405cfbbe32676629d3adaca0ebf19810a4406626c64c24"],"mounts":[],"no_new_privileges":false,"seccomp_profile_sha256":"","signals":[],"user":{"group_idnames":[{"pattern":"65535","strategy":"id"}],"umask":"0022","user_idname":{"pattern":"65535","strategy":"id"}},"working_dir":"/"},
  {"id":"n2","name":"n2","allow_elevated":false,"allow_stdio_access":true,"capabilities":{"bounding":["CAP_CHOWN","CAP_KILL"],"effective":["CAP_CHOWN","CAP_KILL"],"inheritable":[],"permitted":["CAP_CHOWN","CAP_KILL"],"ambient":[]},"command":["/app"],"env_rules":[{"pattern":"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","strategy":"string","required":false},{"pattern":"A=1","strategy":"string","required":false},{"pattern":"B=1","strategy":"string","required":false},{"pattern":"B2=1","strategy":"string","required":false},{"pattern":"C=1","strategy":"string","required":false},{"pattern":"C2=1","strategy":"string","required":false}],"exec_processes":[],"layers":["39e1da7f709eb64084405cfbbe32676629d3adaca0ebf19810a4406626c64c24"],"mounts":[],"no_new_privileges":false,"seccomp_profile_sha256":"","signals":[],"user":{"group_idnames":[{"pattern":"65535","strategy":"id"}],"umask":"0022","user_idname":{"pattern":"65535","strategy":"id"}},"working_dir":"/"},
  {"id":"t0","name":"t0","allow_elevated":false,"allow_stdio_access":true,"capabilities":{"bounding":["CAP_CHOWN","CAP_KILL"],"effective":["CAP_CHOWN","CAP_KILL"],"inheritable":[],"permitted":["CAP_CHOWN","CAP_KILL"],"ambient":[]},"command":["/app"],"env_rules":[{"pattern":"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","strategy":"string","required":false},{"pattern":"A=1","strategy":"string","required":false}],"exec_processes":[],"layers":["fbe3f378ab6cf0a678d15b9968399c63c0e33d18c653073d08d1381e861a22b3"],"mounts":[],"no_new_privileges":false,"seccomp_profile_sha256":"","signals":[],"user":{"group_idnames":[{"pattern":"65535","strategy":"id"}],"umask":"0022","user_idname":{"pattern":"65535","strategy":"id"}},"working_dir":"/"},
  {"id":"t1","name":"t1","allow_elevated":false,"allow_stdio_access":true,"capabilities":{"bounding":["CAP_CHOWN","CAP_KILL"],"effective":["CAP_CHOWN","CAP_KILL"],"inheritable":[],"permitted":["CAP_CHOWN","CAP_KILL"],"ambient":[]},"command":["/app"],"env_rules":[{"pattern":"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","strategy":"string","required":false},{"pattern":"A=1","strategy":"string","required":false},{"pattern":"B=1","strategy":"string","required":false},{"pattern":"B2=1","strategy":"string","required":false}],"exec_processes":[],"layers":["fbe3f378ab6cf0a678d15b9968399c63c0e33d18c653073d08d1381e861a22b3"],"mounts":[],"no_new_privileges":false,"seccomp_profile_sha256":"","signals":[],"user":{"group_idnames":[{"pattern":"65535","strategy":"id"}],"umask":"0022","user_idname":{"pattern":"65535","strategy":"id"}},"working_dir":"/"},
  {"id":"t2","name":"t2","allow_elevated":false,"allow_stdio_access":true,"capabilities":{"bounding":["CAP_CHOWN","CAP_KILL"],"effective":["CAP_CHOWN","CAP_KILL"],"inheritable":[],"permitted":["CAP_CHOWN","CAP_KILL"],"ambient":[]},"command":["/app"],"env_rules":[{"pattern":"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","strategy":"string","required":false},{"pattern":"A=1","strategy":"string","required":false},{"pattern":"C=1","strategy":"string","required":false},{"pattern":"C2=1","strategy":"string","required":false}],"exec_processes":[],"layers":["fbe3f378ab6cf0a678d15b9968399c63c0e33d18c653073d08d1381e861a22b3"],"mounts":[],"no_new_privileges":false,"seccomp_profile_sha256":"","signals":[],"user":{"group_idnames":[{"pattern":"65535","strategy":"id"}],"umask":"0022","user_idname":{"pattern":"65535","strategy":"id"}},"working_dir":"/"},
  {"id":"c13","name":"c13","allow_elevated":false,"allow_stdio_access":true,"capabilities":{"bounding":["CAP_ONE","CAP_THREE"],"effective":["CAP_ONE","CAP_THREE"],"inheritable":[],"permitted":["CAP_ONE","CAP_THREE"],"ambient":[]},"command":["/app"],"env_rules":[{"pattern":"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","strategy":"string","required":false},{"pattern":"A=1","strategy":"string","required":false}],"exec_processes":[],"layers":["761a270947e4b165b5feca01f6cb0763032208ccd3b0439c3c7e65c96b2e8f40"],"mounts":[],"no_new_privileges":false,"seccomp_profile_sha256":"","signals":[],"user":{"group_idnames":[{"pattern":"65535","strategy":"id"}],"umask":"0022","user_idname":{"pattern":"65535","strategy":"id"}},"working_dir":"/"},
  {"id":"c23","name":"c23","allow_elevated":false,"allow_stdio_access":true,"capabilities":{"bounding":["CAP_TWO","CAP_THREE"],"effective":["CAP_TWO","CAP_THREE"],"inheritable":[],"permitted":["CAP_TWO","CAP_THREE"],"ambient":[]},"command":["/app"],"env_rules":[{"pattern":"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","strategy":"string","required":false},{"pattern":"A=1","strategy":"string","required":false}],"exec_processes":[],"layers":["761a270947e4b165b5feca01f6cb0763032208ccd3b0439c3c7e65c96b2e8f40"],"mounts":[],"no_new_privileges":false,"seccomp_profile_sha256":"","signals":[],"user":{"group_idnames":[{"pattern":"65535","strategy":"id"}],"umask":"0022","user_idname":{"pattern":"65535","strategy":"id"}},"working_dir":"/"},
  {"id":"single","name":"single","allow_elevated":false,"allow_stdio_access":true,"capabilities":{"bounding":["CAP_CHOWN","CAP_KILL"],"effective":["CAP_CHOWN","CAP_KILL"],"inheritable":[],"permitted":["CAP_CHOWN","CAP_KILL"],"ambient":[]},"command":["/app"],"env_rules":[{"pattern":"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","strategy":"string","required":false},{"pattern":"A=1","strategy":"string","required":false}],"exec_processes":[],"layers":["670ae3055cb7cacd50f0711fb69667f09bb96b7c0d72d4c36c0f1af499662292"],"mounts":[],"no_new_privileges":false,"seccomp_profile_sha256":"","signals":[],"user":{"group_idnames":[{"pattern":"65535","strategy":"id"}],"umask":"0022","user_idname":{"pattern":"65535","strategy":"id"}},"working_dir":"/"},
]

external_processes := [
  {"allow_stdio_access":false,"command":["nested"],"env_rules":[{"pattern":"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","strategy":"string","required":false},{"pattern":"A=1","strategy":"string","required":false}],"working_dir":"/"},
  {"allow_stdio_access":false,"command":["nested"],"env_rules":[{"pattern":"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","strategy":"string","required":false},{"pattern":"A=1","strategy":"string","required":false},{"pattern":"B=1","strategy":"string","required":false},{"pattern":"B2=1","strategy":"string","required":false}],"working_dir":"/"},
  {"allow_stdio_access":false,"command":["nested"],"env_rules":[{"pattern":"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","strategy":"string","required":false},{"pattern":"A=1","strategy":"string","required":false},{"pattern":"B=1","strategy":"string","required":false},{"pattern":"B2=1","strategy":"string","required":false},{"pattern":"C=1","strategy":"string","required":false},{"pattern":"C2=1","strategy":"string","required":false}],"working_dir":"/"},
  {"allow_stdio_access":false,"command":["tie"],"env_rules":[{"pattern":"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","strategy":"string","required":false},{"pattern":"A=1","strategy":"string","required":false}],"working_dir":"/"},
  {"allow_stdio_access":false,"command":["tie"],"env_rules":[{"pattern":"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","strategy":"string","required":false},{"pattern":"A=1","strategy":"string","required":false},{"pattern":"B=1","strategy":"string","required":false},{"pattern":"B2=1","strategy":"string","required":false}],"working_dir":"/"},
  {"allow_stdio_access":false,"command":["tie"],"env_rules":[{"pattern":"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","strategy":"string","required":false},{"pattern":"A=1","strategy":"string","required":false},{"pattern":"C=1","strategy":"string","required":false},{"pattern":"C2=1","strategy":"string","required":false}],"working_dir":"/"},
]

allow_properties_access := false
allow_dump_stacks := true
allow_runtime_logging := false
allow_host_network := true
allow_environment_variable_dropping := true
allow_unencrypted_scratch := true
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
