// Types of `require('cluster-shm/socket.io')` (lib/socket.io.js).
import type { ClusterAdapterWithHeartbeat, ClusterAdapterOptions } from 'socket.io-adapter'
import type { Bus } from '../index'

export interface ClusterShmAdapterOptions extends Partial<ClusterAdapterOptions> {
  /** First part of the topic names (default 'socket.io'): `<prefix>#<namespace>`. */
  prefix?: string
}

/** The adapter of one namespace: socket.io-adapter's ClusterAdapterWithHeartbeat over cluster-shm topics. */
export declare class ClusterShmAdapter extends ClusterAdapterWithHeartbeat {}

/** What `io.adapter(...)` (or `new Server(httpServer, { adapter })`) takes, for this process's bus. */
export declare function createAdapter(bus: Bus, options?: ClusterShmAdapterOptions): (nsp: any) => ClusterShmAdapter
