// Compiled by __test__/types.spec.js with `tsc --noEmit --strict`: valid uses must type-check,
// and every `@ts-expect-error` line must really be an error.
import { masterInit, workerInit, join, cleanupJoined, PRIMARY, ClusterShmError, RemoteError, Bus, Message, ErrorCode, TopicMessage } from '../..'

const primary: Bus = masterInit({ workers: 2, ringSize: 1 << 16, spinMicros: 0 })
const worker: Bus = workerInit({ name: primary.name, index: 0 })
const joined: Bus = join({ name: 'app', workers: 2, timeout: 1000 })
const removed: boolean = cleanupJoined('app')
const ok: boolean = worker.write(PRIMARY, Buffer.from('x'))
const sent: Promise<void> = worker.send(1, { any: 'value' }, { timeout: 100 })
const count: Promise<number> = worker.broadcast('hello')
const msg: Message | null = primary.read()
const sub = primary.subscribe((m: Message) => void m.from)
sub.unsubscribe()
primary.on('attach', (i: number) => void i)
primary.on('lost', (e) => void e.reason)
const peers: number[] = primary.peers()
const n: number = primary.workers + primary.maxWrite + primary.ringSize + primary.queued + primary.index
const code: ErrorCode = new ClusterShmError('ERR_CLOSED', 'x').code
const sem = primary.semaphore('jobs', { permits: 3 })
const permit: Promise<boolean> = sem.acquire({ timeout: 10, signal: AbortSignal.timeout(5) }).then((p) => p.recovered)
const locked: Promise<number> = primary.lock('m', async (p) => (p.recovered ? 1 : 2))
const region = primary.region('r', 64)
region.write(0, Buffer.from('x'))
const bytes: Buffer = region.read(0, 1)
const map = primary.map('m', { capacity: 10, maxKeyBytes: 16, maxValueBytes: 32 })
const hits: number = map.set('a', 1).increment('a')
const swapped: boolean = map.compareAndSet('a', 2, undefined)
const topicSub = primary.subscribe('room.*', (m: TopicMessage) => void m.topic)
topicSub.unsubscribe()
const reached: Promise<number> = primary.publish('room.1', { text: 'hi' })
const wrote: boolean = primary.tryPublish('room.1', { text: 'hi' })
const answer: Promise<string> = worker.request<string>(PRIMARY, 'q', { timeout: 100, method: 'm' })
const all = primary.requestAll<number>('ping').then((r) => r.answers.map((a) => a.data + 1).concat(r.failures.map((f) => f.code.length)))
primary.respond((data, { from }) => [data, from]).unsubscribe()
primary.handle('m', async () => 'x').unsubscribe()
const remoteCode: string = new RemoteError('m', 'E_X', 0).code
void [reached, wrote, answer, all, remoteCode]
void [ok, sent, count, msg, peers, n, code, permit, locked, bytes, hits, swapped, sem.tryAcquire(), sem.available]
worker.close()
primary.close()

// @ts-expect-error workers must be a number
masterInit({ workers: '4' })
// @ts-expect-error unknown option
workerInit({ indx: 1 })
// @ts-expect-error subscribe takes a callback
primary.subscribe('topic')
// @ts-expect-error the index is read-only
primary.index = 3
// @ts-expect-error not an error code
const bad: ErrorCode = 'ERR_NOPE'
// @ts-expect-error publish needs a topic string
primary.publish(1, 'x')
// @ts-expect-error handle needs a method name
primary.handle(() => 1)
// @ts-expect-error map keys are strings
map.get(1)
// @ts-expect-error lock needs a function
primary.lock('m')
// @ts-expect-error Bus is made by masterInit/workerInit, not new
new Bus()
void bad
