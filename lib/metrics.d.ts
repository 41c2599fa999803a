import type { Registry } from 'prom-client'
import type { Bus } from '../index'

/** What collect() registered. */
export interface Collected {
  /** Names of the metrics registered (all prefixed `cluster_shm_`). */
  names: string[]
  /** Unregisters them. */
  remove(): void
}

/**
 * Registers the whole cluster's metrics, read from the shared segment at scrape time, in
 * `registry` (prom-client's default registry when omitted). Needs prom-client (an optional peer
 * dependency).
 */
export function collect(bus: Bus, registry?: Registry): Collected
