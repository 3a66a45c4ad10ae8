package policy

# Fragment references and trust lists. Also used as the loaded fragment module (namespace "policy").

api_version := "0.12.0"
framework_version := "0.5.0"

fragments := [
  {"issuer":"did:x509:0:sha256:I__iuMzXPVYJcmmjQaqLKmmMMSYWVCZW3NuvSJl2t44::subject:CN:Contoso%20Fragment%20Signer","feed":"num-min1","minimum_svn":"1","includes":["containers","fragments"]},
  {"issuer":"did:x509:0:sha256:I__iuMzXPVYJcmmjQaqLKmmMMSYWVCZW3NuvSJl2t44::subject:CN:Contoso%20Fragment%20Signer","feed":"num-min5","minimum_svn":"5","includes":["containers"]},
  {"issuer":"did:x509:0:sha256:I__iuMzXPVYJcmmjQaqLKmmMMSYWVCZW3NuvSJl2t44::subject:CN:Contoso%20Fragment%20Signer","feed":"semver","minimum_svn":"1.0.0","includes":["containers"]},
  {"issuer":"did:x509:0:sha256:I__iuMzXPVYJcmmjQaqLKmmMMSYWVCZW3NuvSJl2t44::subject:CN:Contoso%20Fragment%20Signer","feed":"ns","minimum_svn":"1","includes":["containers","namespace"]},
  {"issuer":"did:x509:0:sha256:I__iuMzXPVYJcmmjQaqLKmmMMSYWVCZW3NuvSJl2t44::subject:CN:Contoso%20Fragment%20Signer","feed":"receipts","minimum_svn":"1","includes":["containers"],"required_receipts":["ledger.example","TTL:subjA","*"]},
  {"issuer":"did:x509:0:sha256:I__iuMzXPVYJcmmjQaqLKmmMMSYWVCZW3NuvSJl2t44::subject:CN:Contoso%20Fragment%20Signer","feed":"params","minimum_svn":"1","includes":["containers"],"parameters":{"p":1}},
  {"issuer":"did:x509:0:sha256:I__iuMzXPVYJcmmjQaqLKmmMMSYWVCZW3NuvSJl2t44::subject:CN:Contoso%20Fragment%20Signer","feed":"params","minimum_svn":"1","includes":["containers"],"parameters":{"p":2}},
  {"issuer":"did:x509:0:sha256:I__iuMzXPVYJcmmjQaqLKmmMMSYWVCZW3NuvSJl2t44::subject:CN:Contoso%20Fragment%20Signer","feed":"conflict","minimum_svn":"1","includes":["containers"]},
  {"issuer":"did:x509:0:sha256:I__iuMzXPVYJcmmjQaqLKmmMMSYWVCZW3NuvSJl2t44::subject:CN:Contoso%20Fragment%20Signer","feed":"conflict","minimum_svn":"1","includes":["containers","namespace"]},
  {"issuer":"did:x509:other","feed":"nested","minimum_svn":"0","includes":[],"parameters":{"nested":true}},
]

containers := [
  {"id":"frag","name":"frag","allow_elevated":false,"allow_stdio_access":false,"capabilities":{"bounding":["CAP_CHOWN","CAP_DAC_OVERRIDE","CAP_FSETID","CAP_FOWNER","CAP_MKNOD","CAP_NET_RAW","CAP_SETGID","CAP_SETUID","CAP_SETFCAP","CAP_SETPCAP","CAP_NET_BIND_SERVICE","CAP_SYS_CHROOT","CAP_KILL","CAP_AUDIT_WRITE"],"effective":["CAP_CHOWN","CAP_DAC_OVERRIDE","CAP_FSETID","CAP_FOWNER","CAP_MKNOD","CAP_NET_RAW","CAP_SETGID","CAP_SETUID","CAP_SETFCAP","CAP_SETPCAP","CAP_NET_BIND_SERVICE","CAP_SYS_CHROOT","CAP_KILL","CAP_AUDIT_WRITE"],"inheritable":[],"permitted":["CAP_CHOWN","CAP_DAC_OVERRIDE","CAP_FSETID","CAP_FOWNER","CAP_MKNOD","CAP_NET_RAW","CAP_SETGID","CAP_SETUID","CAP_SETFCAP","CAP_SETPCAP","CAP_NET_BIND_SERVICE","CAP_SYS_CHROOT","CAP_KILL","CAP_AUDIT_WRITE"],"ambient":[]},"command":["/frag"],"env_rules":[{"pattern":"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","strategy":"string","required":true},{"pattern":"TERM=xterm","strategy":"string","required":false}],"exec_processes":[],"layers":["1cf38e7dee353d3ce75393d0265e73ff6799cc30dafd4eff49d1cdcc86278a72"],"mounts":[],"no_new_privileges":false,"seccomp_profile_sha256":"","signals":[],"user":{"group_idnames":[{"pattern":"65535","strategy":"id"}],"umask":"0022","user_idname":{"pattern":"65535","strategy":"id"}},"working_dir":"/"},
]

allow_properties_access := true
allow_dump_stacks := false
allow_runtime_logging := true
allow_host_network := false
allow_environment_variable_dropping := false
allow_unencrypted_scratch := false
allow_capability_dropping := false

svn := "3"

transparency_trust_lists := [
  {"issuer":"did:x509:0:sha256:I__iuMzXPVYJcmmjQaqLKmmMMSYWVCZW3NuvSJl2t44::subject:CN:Contoso%20Fragment%20Signer","subject":"subjA","minimum_svn":1,"allowed_ledgers":["ledger.example"]},
  {"issuer":"did:x509:0:sha256:I__iuMzXPVYJcmmjQaqLKmmMMSYWVCZW3NuvSJl2t44::subject:CN:Contoso%20Fragment%20Signer","subject":"subjStar","minimum_svn":"2","allowed_ledgers":["*"]},
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
