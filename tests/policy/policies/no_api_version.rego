package policy

framework_version := "0.5.0"

mount_device := data.framework.mount_device
reason := data.framework.reason
