// Types of `require('cluster-shm/express-rate-limit')` (lib/express-rate-limit.js).
import type { Store, Options, ClientRateLimitInfo } from 'express-rate-limit'
import type { Bus } from '../index'

export interface ClusterShmStoreOptions {
  /** This process's bus (masterInit() or workerInit()). */
  bus: Bus
  /** Name of the shared map; the same `name`, `capacity` and `maxKeyBytes` in every worker. Default 'express-rate-limit'. */
  name?: string
  /** Prepended to every key: one prefix per limiter sharing the map. Default 'rl:'. */
  prefix?: string
  /** Clients held at once (default 10000); expired ones are swept. */
  capacity?: number
  /** Longest prefix + key in bytes (default 128). */
  maxKeyBytes?: number
}

/** express-rate-limit's Store on a cluster-shm SharedMap: one count for the whole cluster. */
export declare class ClusterShmStore implements Store {
  constructor(options: ClusterShmStoreOptions)
  prefix: string
  localKeys: false
  init(options: Options): void
  get(key: string): ClientRateLimitInfo | undefined
  increment(key: string): ClientRateLimitInfo
  decrement(key: string): void
  resetKey(key: string): void
  resetAll(): void
  /** Deletes this store's expired entries now; returns how many (also run every window, by one worker at a time, and when the map is full). */
  sweep(): number
  shutdown(): void
}
