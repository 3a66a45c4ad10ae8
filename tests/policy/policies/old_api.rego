package policy

# api_version 0.1.0 / framework_version 0.1.0: defines only a few rules
# (signal_container_process postdates 0.1.0 but is defined, so the framework answers).

api_version := "0.1.0"
framework_version := "0.1.0"

containers := [
  {"allow_elevated":false,"command":["/old"],"env_rules":[{"pattern":"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","strategy":"string","required":false}],"layers":["58267bf92bf3aa49f260e49842ec8dad122b91fdbd12b1513a4d39798bf6e294"],"mounts":[],"exec_processes":[{"command":["/old-exec"],"signals":[]}],"signals":[],"working_dir":"/","allow_stdio_access":true,"no_new_privileges":true,"seccomp_profile_sha256":"877733f25a85e1271043e87be5bb60cdd6538c6a939115bdda956bf2c032fdb5","capabilities":{"bounding":["CAP_X"],"effective":["CAP_X"],"inheritable":[],"permitted":["CAP_X"],"ambient":[]},"user":{"user_idname":{"pattern":"nobody","strategy":"name"},"group_idnames":[],"umask":"0077"}},
]

allow_capability_dropping := true

mount_device := data.framework.mount_device
mount_overlay := data.framework.mount_overlay
create_container := data.framework.create_container
signal_container_process := data.framework.signal_container_process
reason := {"errors": data.framework.errors}
