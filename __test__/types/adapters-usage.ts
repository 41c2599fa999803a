// The subpath exports' types in use (checked by __test__/socketio-types.spec.js under --strict).
import { Server } from 'socket.io'
import { rateLimit } from 'express-rate-limit'
import { workerInit } from 'cluster-shm'
import { createAdapter, bridgeTopics } from 'cluster-shm/socket.io'
import { ClusterShmStore } from 'cluster-shm/express-rate-limit'

const bus = workerInit()
const io = new Server({ adapter: createAdapter(bus, { heartbeatInterval: 1000, prefix: 'app' }) })
io.adapter(createAdapter(bus))
// @ts-expect-error the bus is required
createAdapter()
// @ts-expect-error prefix is a string
createAdapter(bus, { prefix: 1 })
const bridged: string[] = [...bridgeTopics(), ...bridgeTopics('app'), 'room.*']
bus.bridge({ redis: 'redis://127.0.0.1:6379', topics: bridged })

const store = new ClusterShmStore({ bus, prefix: 'api:', capacity: 5000 })
rateLimit({ windowMs: 60_000, limit: 100, store })
const swept: number = store.sweep()
// @ts-expect-error the bus is required
new ClusterShmStore({ prefix: 'x' })
export { swept, bridged }
