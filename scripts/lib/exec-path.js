'use strict'
// Preloaded with NODE_OPTIONS=--require under qemu-user when the kernel has no binfmt_misc entry
// for the guest architecture: child_process.fork / cluster.fork / spawn(process.execPath) then
// start children through CLUSTER_SHM_EXEC_PATH, a wrapper that runs the guest Node under qemu.
if (process.env.CLUSTER_SHM_EXEC_PATH) process.execPath = process.env.CLUSTER_SHM_EXEC_PATH
