package api

# API module for the gcs security-policy engine.
#
# `version` is the API version this guest implements; `enforcement_points`
# lists every enforcement point (EP) the guest may query, the API version that
# introduced it, the results used when a policy predates the EP (and merged
# under every policy result), and whether an undefined policy rule falls back
# to the framework's rule of the same name.

version := "0.12.0"

framework_version := "0.5.0"

enforcement_points := {
	"mount_device": {
		"introducedVersion": "0.1.0",
		"default_results": {"allowed": false},
		"use_framework": false,
	},
	"rw_mount_device": {
		"introducedVersion": "0.11.0",
		"default_results": {},
		"use_framework": true,
	},
	"mount_blockdev": {
		"introducedVersion": "0.11.1",
		"default_results": {"allowed": false},
		"use_framework": false,
	},
	"mount_overlay": {
		"introducedVersion": "0.1.0",
		"default_results": {"allowed": false},
		"use_framework": false,
	},
	"mount_cims": {
		"introducedVersion": "0.11.0",
		"default_results": {"allowed": false},
		"use_framework": false,
	},
	"registry_changes": {
		"introducedVersion": "0.10.0",
		"default_results": {"allowed": false},
		"use_framework": false,
	},
	"create_container": {
		"introducedVersion": "0.1.0",
		"default_results": {"allowed": false, "env_list": null, "allow_stdio_access": false},
		"use_framework": false,
	},
	"unmount_device": {
		"introducedVersion": "0.2.0",
		"default_results": {"allowed": true},
		"use_framework": false,
	},
	"rw_unmount_device": {
		"introducedVersion": "0.11.0",
		"default_results": {},
		"use_framework": true,
	},
	"unmount_blockdev": {
		"introducedVersion": "0.11.1",
		"default_results": {"allowed": false},
		"use_framework": false,
	},
	"unmount_overlay": {
		"introducedVersion": "0.6.0",
		"default_results": {"allowed": true},
		"use_framework": false,
	},
	"exec_in_container": {
		"introducedVersion": "0.2.0",
		"default_results": {"allowed": true, "env_list": null},
		"use_framework": false,
	},
	"exec_external": {
		"introducedVersion": "0.3.0",
		"default_results": {"allowed": true, "env_list": null, "allow_stdio_access": false},
		"use_framework": false,
	},
	"shutdown_container": {
		"introducedVersion": "0.4.0",
		"default_results": {"allowed": true},
		"use_framework": false,
	},
	"signal_container_process": {
		"introducedVersion": "0.5.0",
		"default_results": {"allowed": true},
		"use_framework": false,
	},
	"plan9_mount": {
		"introducedVersion": "0.6.0",
		"default_results": {"allowed": true},
		"use_framework": false,
	},
	"plan9_unmount": {
		"introducedVersion": "0.6.0",
		"default_results": {"allowed": true},
		"use_framework": false,
	},
	"get_properties": {
		"introducedVersion": "0.7.0",
		"default_results": {"allowed": true},
		"use_framework": false,
	},
	"dump_stacks": {
		"introducedVersion": "0.7.0",
		"default_results": {"allowed": true},
		"use_framework": false,
	},
	"runtime_logging": {
		"introducedVersion": "0.8.0",
		"default_results": {"allowed": true},
		"use_framework": false,
	},
	"load_fragment": {
		"introducedVersion": "0.9.0",
		"default_results": {"allowed": false, "add_module": false},
		"use_framework": false,
	},
	"scratch_mount": {
		"introducedVersion": "0.10.0",
		"default_results": {"allowed": true},
		"use_framework": false,
	},
	"scratch_unmount": {
		"introducedVersion": "0.10.0",
		"default_results": {"allowed": true},
		"use_framework": false,
	},
	"log_provider": {
		"introducedVersion": "0.11.0",
		"default_results": {"allowed": true, "providers_to_keep": null},
		"use_framework": false,
	},
	"load_transparency_trust_list": {
		"introducedVersion": "0.12.0",
		"default_results": {"allowed": false},
		"use_framework": false,
	},
	"host_network": {
		"introducedVersion": "0.12.0",
		"default_results": {"allowed": false},
		"use_framework": false,
	},
}
