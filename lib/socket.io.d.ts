// Types of `require('cluster-shm/socket.io')` (lib/socket.io.js).
import type { ClusterAdapterWithHeartbeat, ClusterAdapterOptions } from 'socket.io-adapter'
import type { Bus } from '../index'

export interface ClusterShmAdapterOptions extends Partial<ClusterAdapterOptions> {
  /** First part of the topic names (default 'socket.io'): `<prefix>.<namespace>`; no '*' or '#'. */
  prefix?: string
}

/** The adapter of one namespace: socket.io-adapter's ClusterAdapterWithHeartbeat over cluster-shm topics. */
export declare class ClusterShmAdapter extends ClusterAdapterWithHeartbeat {}

/** What `io.adapter(...)` (or `new Server(httpServer, { adapter })`) takes, for this process's bus. */
export declare function createAdapter(bus: Bus, options?: ClusterShmAdapterOptions): (nsp: any) => ClusterShmAdapter

/**
 * The topic patterns to pass to `bus.bridge({ topics })` so that the adapter (with the same
 * `prefix`, default 'socket.io') works across hosts: `[\`${prefix}.*\`]`.
 */
export declare function bridgeTopics(prefix?: string): string[]
