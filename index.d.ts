// Types of the public API (index.js). __test__/types.spec.js checks them against the runtime.
import { EventEmitter } from 'node:events'

/** Address of the primary process. */
export declare const PRIMARY: -1
/** Environment variable through which forked workers find their cluster's segment. */
export declare const SEGMENT_ENV: 'CLUSTER_SHM_SEGMENT'

/** Stable error codes (see README, "Error codes"). */
export type ErrorCode =
  | 'ERR_INVALID_ARG'
  | 'ERR_INDEX_OUT_OF_RANGE'
  | 'ERR_INDEX_TAKEN'
  | 'ERR_NO_FREE_INDEX'
  | 'ERR_NO_SEGMENT'
  | 'ERR_SEGMENT_NOT_FOUND'
  | 'ERR_SEGMENT_ACCESS'
  | 'ERR_BAD_SEGMENT'
  | 'ERR_SEGMENT_CREATE'
  | 'ERR_NO_SPACE'
  | 'ERR_CLUSTER_CLOSED'
  | 'ERR_CLOSED'
  | 'ERR_PAYLOAD_TOO_LARGE'
  | 'ERR_UNSERIALIZABLE'
  | 'ERR_SUBSCRIBED'
  | 'ERR_TIMEOUT'
  | 'ERR_CORRUPT'
  | 'ERR_ABORTED'
  | 'ERR_MISMATCH'
  | 'ERR_NOT_HELD'
  | 'ERR_MAP_FULL'
  | 'ERR_NOT_A_NUMBER'
  | 'ERR_OUT_OF_BOUNDS'
  | 'ERR_NOT_ATTACHED'
  | 'ERR_PEER_GONE'
  | 'ERR_NO_HANDLER'
  | 'ERR_QUEUE_FULL'
  | 'ERR_LOCK_TIMEOUT'
  | 'ERR_INTERNAL'

export declare class ClusterShmError extends Error {
  constructor(code: ErrorCode, message: string)
  readonly code: ErrorCode
}

/** A worker index (0..workers-1) or PRIMARY. */
export type Address = number

/**
 * What can be sent: bytes (delivered as Buffer), a string (delivered as string), or any value
 * that `v8.serialize` handles (delivered as that value).
 */
export type Payload = unknown

export interface Message<T = any> {
  /** Address of the sender. */
  from: Address
  data: T
}

export interface TopicMessage<T = any> extends Message<T> {
  topic: string
}

/** The error a request handler threw, carried back to the requester with its message and code. */
export declare class RemoteError extends Error {
  constructor(message: string, code: string, from: Address)
  /** The handler's `err.code`, or 'ERR_REMOTE' when it had none ('ERR_NO_HANDLER' when nothing handles the request). */
  readonly code: string
  /** Who answered with the error. */
  readonly from: Address
}

export interface RequestOptions {
  /** Milliseconds to wait for the answer (default 30000); rejects with ERR_TIMEOUT. */
  timeout?: number
  /** Rejects with ERR_ABORTED when aborted. */
  signal?: AbortSignal
  /** Routes the request to the handler registered with handle(method, …); default: respond()'s. */
  method?: string
}

export interface RequestAllResult<T = any> {
  answers: Array<{ from: Address; data: T }>
  failures: Array<{ from: Address; code: string; message: string }>
}

export type RequestHandler = (data: any, context: { from: Address; method: string }) => unknown

export interface LostEvent {
  /** The sender's address; null for 'bridge' losses. */
  from: Address | null
  /** 'incomplete': a sender died mid-message, or this index's previous holder died while reassembling one. 'corrupt': the ring was reset. 'bridge': messages between hosts (see `cause`). */
  reason: 'incomplete' | 'corrupt' | 'bridge'
  /** How many; null when it cannot be known (a bridge 'failover'). */
  count?: number | null
  /** 'corrupt': how many unread bytes the reset dropped; absent when that is unknown (the ring's cursors were out of range). */
  bytes?: number
  /** For reason 'bridge': why they were lost. */
  cause?: BridgeLossCause
  /** For cause 'failover': milliseconds since the previous bridge's last sign of life (null if unknown). */
  gapMs?: number | null
  /** For cause 'gap': the id of the host whose messages went missing. */
  host?: string
}

/**
 * 'redis-down': published here while the connection was down (or in a batch waiting or unconfirmed
 * when it broke); 'queue-full': `maxQueue` messages were already waiting for Redis (or, inbound,
 * `maxQueuedBytes` of local sends); 'gap': another host's messages that never arrived (a hole in its
 * sequence numbers); 'failover': the bridging process died and another took over; 'malformed': from
 * Redis, not a batch of this version, an entry that does not decode, or a channel that names no valid
 * topic; 'closed': the bus closed with messages from or for Redis still waiting (or a local send of
 * one from Redis failed otherwise).
 */
export type BridgeLossCause = 'redis-down' | 'queue-full' | 'gap' | 'failover' | 'malformed' | 'closed'

export interface BridgeOptions {
  /** A redis:// URL (needs the optional peer dependency ioredis) or an ioredis client (duplicated, never used itself). */
  redis: string | { duplicate(options?: object): unknown }
  /** Topics and `a.*` patterns that cross hosts. */
  topics: string[]
  /** Prefix of the Redis channels (default 'cluster-shm:'); hosts bridge with each other when it is the same. */
  prefix?: string
  /** Whether this process competes to bridge: default true in a cluster's primary and outside a cluster, false in a cluster worker. */
  candidate?: boolean
  /** Most messages (not batches) waiting for Redis: batched but not sent, or sent and not confirmed; beyond, they are dropped and reported (default 32768). */
  maxQueue?: number
  /** Milliseconds after which a connection still down is reported with 'down' (default 2000). */
  downAfter?: number
}

/** A host's link to the others, returned by bus.bridge(); one process of the host bridges at a time. */
export interface Bridge extends EventEmitter {
  /** Whether this process is the host's bridge now. */
  readonly active: boolean
  /** Whether this process bridges and its Redis connections are up. */
  readonly connected: boolean
  /** This host's id (hex), once this process has bridged. */
  readonly host: string | null
  /** The bridged topics (without those a broader pattern covers). */
  readonly topics: string[]
  /** Messages this process sent to and received from Redis, and those it reported lost. */
  readonly stats: { sent: number; received: number; lost: number }
  /** Stops bridging or competing; another candidate takes over. Idempotent. */
  close(): void
  on(event: 'active' | 'up' | 'close', listener: () => void): this
  on(event: 'down', listener: (event: { ms: number }) => void): this
  on(event: 'error', listener: (err: Error) => void): this
}

/** What readers and writers count in the segment, per ring (and summed per process). */
export interface Counters {
  /** Whole messages published, and their payload bytes. */
  written: number
  writtenBytes: number
  /** Writes that found the ring without room (backpressure). */
  full: number
  /** Messages taken out by the reader, and their payload bytes. */
  read: number
  readBytes: number
  /** Messages reported lost, and corruption resets, by the reader. */
  lost: number
  corrupt: number
}

/** One ring (`from` → `to`); `fill` is ring bytes published and not yet released. */
export interface RingStats extends Counters {
  from: Address
  to: Address
  fill: number
}

/**
 * One index of the cluster and its holder; its counters are sums over the rings it writes
 * (written, full) and reads (read, lost, corrupt).
 */
export interface ProcessStats extends Counters {
  address: Address
  attached: boolean
  /** The holder's pid (0 while free). */
  pid: number
  /** Times the index was taken (restarts + 1). */
  generation: number
  handlesRequests: boolean
  /** Ring bytes waiting for it in all its incoming rings. */
  unread: number
}

export interface HolderStats {
  address: Address
  pid: number
}

/** The cluster as `cluster-shm inspect --json` shows it (and the common part of bus.stats()). */
export interface ClusterStats {
  name: string
  size: number
  ringSize: number
  workers: number
  /** 0 in a segment made by join(). */
  primaryPid: number
  joined: boolean
  closed: false | 'closed' | 'primary-died'
  processes: ProcessStats[]
  rings: RingStats[]
  semaphores: { name: string; permits: number; available: number; holders: HolderStats[] }[]
  /** Semaphores of one permit (bus.lock()). */
  locks: { name: string; holder: HolderStats | null }[]
  maps: { name: string; size: number; capacity: number }[]
  regions: { name: string; size: number }[]
  heap: { size: number; used: number }
  topics: { name: string; subscribers: number; addresses: Address[] }[]
}

export interface PeerRingStats {
  /** Fraction of the ring in use (0..1), and the same in bytes. */
  fill: number
  bytes: number
  written: number
  writtenBytes: number
  read: number
  readBytes: number
}

export interface BusStats extends ClusterStats {
  self: {
    address: Address
    pid: number
    generation: number
    delivery: 'event-loop' | 'thread' | null
    /** send()s waiting for room, and their payload bytes. */
    queued: number
    queuedBytes: number
    /** write()s staged for the end of this microtask checkpoint, and their payload bytes. */
    stagedMessages: number
    stagedBytes: number
  }
  peers: {
    address: Address
    attached: boolean
    pid: number
    generation: number
    /** The ring this process writes to it. */
    to: PeerRingStats & { full: number }
    /** The ring it writes to this process. */
    from: PeerRingStats & { lost: number; corrupt: number }
  }[]
}

export interface Subscription {
  unsubscribe(): void
}

export interface SendOptions {
  /** Milliseconds to wait for room in the receiver's ring before rejecting with ERR_TIMEOUT. */
  timeout?: number
}

export interface MasterOptions {
  /** Worker indices 0..workers-1 (default: os.availableParallelism()), 1..256. */
  workers?: number
  /** Bytes per ring (one ring per ordered pair of processes), a power of two >= 4096. Default: up to 1 MiB, keeping the segment near 64 MiB. */
  ringSize?: number
  /** Microseconds the delivery thread spins before sleeping (latency vs one busy core). Default 0. */
  spinMicros?: number
  /** Payload bytes of send()s this process may have queued (waiting for room) before send() rejects with ERR_QUEUE_FULL. Default 64 MiB. */
  maxQueuedBytes?: number
  /** Bytes for named semaphores, regions and maps (a multiple of 4096). Default 4 MiB. */
  heapSize?: number
}

export interface WorkerOptions {
  /** Take this worker index (it must be free or held by a dead process); default: the lowest free one. */
  index?: number
  /** Segment name (default: process.env.CLUSTER_SHM_SEGMENT, set by masterInit for forked workers). */
  name?: string
  /** See MasterOptions.spinMicros. */
  spinMicros?: number
  /** See MasterOptions.maxQueuedBytes. */
  maxQueuedBytes?: number
}

export interface JoinOptions extends MasterOptions {
  /** Application name, required: processes of one user that join the same name share a segment. */
  name: string
  /** Take this worker index; default: PM2's NODE_APP_INSTANCE, else the lowest free one. Waits (up to `timeout`) while a live process holds it. */
  index?: number
  /** Milliseconds to wait for a creator to finish, a last member to leave, or the index to be given back (default 10000); then ERR_TIMEOUT. */
  timeout?: number
}

export declare class Bus extends EventEmitter {
  private constructor()
  /** This process's address: a worker index, or PRIMARY. */
  readonly index: Address
  /** Number of worker indices. */
  readonly workers: number
  /** Name of the shared-memory segment. */
  readonly name: string
  readonly ringSize: number
  /** Largest payload (bytes) that write() takes; send() takes up to 4 GiB - 1. */
  readonly maxWrite: number
  readonly closed: boolean
  /** Messages of this process waiting for room in a receiver's ring. */
  readonly queued: number
  /** Payload bytes of those messages. */
  readonly queuedBytes: number
  /** Past this many queued bytes, send(), broadcast() and publish() reject at once with ERR_QUEUE_FULL (one message is always taken). */
  readonly maxQueuedBytes: number
  /**
   * How incoming messages reach this process now: `'event-loop'` (the event loop is woken
   * directly; Linux), `'thread'` (a delivery thread hands them over; other platforms, or
   * `CLUSTER_SHM_DELIVERY=thread`), or `null` while nothing is subscribed.
   */
  readonly delivery: 'event-loop' | 'thread' | null

  /** Writes one whole message now, or nothing (false: the receiver's ring is full, or send()s to it are queued). */
  write(to: Address, data: Payload): boolean
  /** Writes small messages staged by write() into the rings now (else: at the end of the current microtask checkpoint). */
  flush(): void
  /** Sends one message of any size; resolves once it is in the receiver's ring. */
  send(to: Address, data: Payload, options?: SendOptions): Promise<void>
  /** Sends to every other attached process; resolves with the number of receivers. */
  broadcast(data: Payload, options?: SendOptions): Promise<number>
  /** Pulls the next message, or null. Throws ERR_SUBSCRIBED while a subscription is active. */
  read(): Message | null
  /** Calls `callback` for every plain message (delivered by a background thread; no polling). */
  subscribe(callback: (message: Message) => void): Subscription
  /** Calls `callback` for every message published to `topic` (a trailing `*` matches every topic with that prefix). */
  subscribe(topic: string, callback: (message: TopicMessage) => void): Subscription
  /** Delivers to every process subscribed to `topic` (this one included) and no other; resolves with how many it reached. */
  publish(topic: string, data: Payload, options?: SendOptions): Promise<number>
  /**
   * publish() now or not at all, without a promise: true once `data` is in the ring of every
   * subscriber of `topic` (this process included); false, with nothing written, when any of
   * those rings lacks room or the message is larger than one frame (then await publish()).
   */
  tryPublish(topic: string, data: Payload): boolean
  /** Resolves with the answer of `to`'s handler; rejects with its error (RemoteError) or ERR_NOT_ATTACHED, ERR_PEER_GONE, ERR_TIMEOUT, ERR_ABORTED. */
  request<T = any>(to: Address, data: Payload, options?: RequestOptions): Promise<T>
  /** Asks every other attached process; resolves with who answered and who failed (never rejects for one failure). */
  requestAll<T = any>(data: Payload, options?: RequestOptions): Promise<RequestAllResult<T>>
  /** Answers requests sent without a method. */
  respond(handler: RequestHandler): Subscription
  /** Answers requests sent with `{ method }`. */
  handle(method: string, handler: RequestHandler): Subscription
  /** Addresses of the other attached processes. */
  peers(): Address[]
  /** Detaches (the primary also removes the segment and tells the workers). Idempotent. */
  close(): void
  /** The named cross-process semaphore, created on first use with `permits` (default 1). */
  semaphore(name: string, options?: { permits?: number }): Semaphore
  /** Runs `fn` holding the named mutex (a semaphore of one permit); releases it when `fn` settles. */
  lock<T>(name: string, fn: (permit: Permit) => T | Promise<T>, options?: AcquireOptions): Promise<T>
  /** The named region of `size` shared bytes, created zeroed on first use. */
  region(name: string, size: number): Region
  /** The named shared map, created on first use. */
  map(name: string, options?: MapOptions): SharedMap
  /** Bridges `topics` to the other hosts over Redis; every process may call it, one bridges at a time. */
  bridge(options: BridgeOptions): Bridge
  /** What is inside the cluster now: this process, its peers, every process and ring, the named objects. */
  stats(): BusStats

  on(event: 'message', listener: (message: Message) => void): this
  on(event: 'attach' | 'detach', listener: (index: Address) => void): this
  on(event: 'lost', listener: (event: LostEvent) => void): this
  on(event: 'shutdown', listener: (event: { reason: 'closed' | 'primary-died' }) => void): this
  on(event: 'close', listener: () => void): this
  once(event: 'message', listener: (message: Message) => void): this
  once(event: 'attach' | 'detach', listener: (index: Address) => void): this
  once(event: 'lost', listener: (event: LostEvent) => void): this
  once(event: 'shutdown', listener: (event: { reason: 'closed' | 'primary-died' }) => void): this
  once(event: 'close', listener: () => void): this
  off(event: 'message', listener: (message: Message) => void): this
  off(event: string, listener: (...args: any[]) => void): this
}

/** Creates this cluster's segment; call in the primary before forking workers. */
export declare function masterInit(options?: MasterOptions): Bus
/** Attaches this process (a cluster worker, or any process given `name`) to the segment. */
export declare function workerInit(options?: WorkerOptions): Bus
/** Creates or attaches to application `name`'s segment, with no primary (PM2, child_process.fork, independent processes); the last member out removes it. */
export declare function join(options: JoinOptions): Bus
/** Removes application `name`'s segment if no live process is a member of it; true when none is left. */
export declare function cleanupJoined(name: string): boolean

export interface AcquireOptions {
  /** Milliseconds to wait before rejecting with ERR_TIMEOUT (0: only if free now). */
  timeout?: number
  /** Rejects with ERR_ABORTED when aborted; no permit stays taken. */
  signal?: AbortSignal
}

export declare class Permit {
  private constructor()
  /** True when the previous holder died (or detached) holding this permit: what it guarded may be half-written. */
  readonly recovered: boolean
  /** Gives the permit back. Idempotent. */
  release(): void
}

export declare class Semaphore {
  private constructor()
  readonly name: string
  readonly permits: number
  /** Permits free now. */
  readonly available: number
  /** Permits this process holds. */
  readonly held: number
  /** Whether the permit taken by the last successful tryAcquire() was recovered. */
  readonly recovered: boolean
  /** Takes a permit now if one is free. */
  tryAcquire(): boolean
  acquire(options?: AcquireOptions): Promise<Permit>
  /** Gives back one permit this process holds (ERR_NOT_HELD if none). */
  release(): void
}

export declare class Region {
  private constructor()
  readonly size: number
  write(offset: number, bytes: Uint8Array): void
  read(offset: number, length: number): Buffer
}

export interface MapOptions {
  /** Most keys the map holds (default 1024). */
  capacity?: number
  /** Longest key in UTF-8 bytes (default 64). */
  maxKeyBytes?: number
  /** Longest encoded value in bytes (default 256; a number takes 8). */
  maxValueBytes?: number
  /** This process's bound (ms, default 10) on waiting for another process's hold of the map's lock; past it an operation throws ERR_LOCK_TIMEOUT and changes nothing. Not a parameter of the shared map. */
  lockTimeout?: number
}

export declare class SharedMap {
  private constructor()
  readonly capacity: number
  readonly maxKeyBytes: number
  readonly maxValueBytes: number
  /** See MapOptions.lockTimeout; settable. */
  lockTimeout: number
  /** Keys held now. */
  readonly size: number
  get(key: string): any
  has(key: string): boolean
  set(key: string, value: Payload): this
  delete(key: string): boolean
  /** Atomically adds `by` (default 1) to the number at `key` (absent counts as 0); returns the new value. */
  increment(key: string, by?: number): number
  /** Sets `key` to `value` if it currently equals `expected` (undefined = absent; value undefined deletes). */
  compareAndSet(key: string, expected: Payload | undefined, value: Payload | undefined): boolean
  keys(): string[]
}
