// lib/metrics.d.ts in use (checked by __test__/metrics.spec.js under --strict).
import { Registry } from 'prom-client'
import { workerInit } from '../../index'
import { collect, Collected } from '../../lib/metrics'

const bus = workerInit()
const registry = new Registry()
const collected: Collected = collect(bus, registry)
const names: string[] = collected.names
collected.remove()
collect(bus)
// @ts-expect-error the bus is required
collect()
// @ts-expect-error a registry, not a string
collect(bus, 'default')
export { names }
