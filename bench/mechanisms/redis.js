'use strict'
// Redis pub/sub with ioredis and a local redis-server (started and stopped by bench/run.js on a
// free 127.0.0.1 port, no persistence). Each worker has a publisher connection (with
// enableAutoPipelining: the commands of one tick leave in one write) and a subscriber connection
// on its own channel; broadcast receivers also subscribe to a shared channel. Small messages are
// strings ('message' event); bulk messages are Buffers ('messageBuffer' event). PUBLISH returns a
// promise (the reply); at most `window` of them are in flight.

const path = require('node:path')
const { Window } = require('../lib/common')

function primary() {
  if (!process.env.BENCH_REDIS_PORT) throw new Error('no redis-server (BENCH_REDIS_PORT unset)')
  return { serialization: 'json', close: async () => {} }
}

async function open({ rank, workers }) {
  const Redis = require(require.resolve('ioredis', { paths: [path.join(__dirname, '..', '..')] }))
  const prefix = process.env.BENCH_REDIS_PREFIX || 'cshm-bench'
  const opts = {
    host: '127.0.0.1',
    port: Number(process.env.BENCH_REDIS_PORT),
    lazyConnect: true,
    maxRetriesPerRequest: 1,
    enableOfflineQueue: false,
  }
  const pub = new Redis({ ...opts, enableAutoPipelining: true })
  const sub = new Redis(opts)
  await Promise.all([pub.connect(), sub.connect()])
  const channel = (r) => `${prefix}:${r}`
  const bc = `${prefix}:all`
  const channels = [channel(rank)]
  if (rank !== 0) channels.push(bc) // rank 0 is the broadcaster
  await sub.subscribe(...channels)
  let handler = null
  const onString = (_ch, m) => handler(m)
  const onBuffer = (_ch, m) => handler(m)
  let mode = null
  let waiting = null // request id -> resolve (requester side)
  let nextId = 1
  const small = new Window(1024)
  const bulk = new Window(8)
  return {
    kind: 'string',
    async link() {},
    listen(fn, kind) {
      handler = fn
      const want = kind === 'buffer' ? 'buffer' : 'string'
      if (want === mode) return
      sub.off('message', onString)
      sub.off('messageBuffer', onBuffer)
      if (want === 'buffer') sub.on('messageBuffer', onBuffer)
      else sub.on('message', onString)
      mode = want
    },
    send(to, data) {
      return (data.length > 4096 ? bulk : small).track(pub.publish(channel(to), data))
    },
    broadcast(_targets, data) {
      return (data.length > 4096 ? bulk : small).track(pub.publish(bc, data))
    },
    // Topics: PUBLISH to a channel that only the subscribers SUBSCRIBE to; PUBLISH answers how
    // many clients got it, which must be the number of subscribers.
    async subscribe(topic) {
      await sub.subscribe(`${prefix}:topic:${topic}`)
    },
    publish(topic, data, subscribers) {
      const want = subscribers.length
      return small.track(
        pub.publish(`${prefix}:topic:${topic}`, data).then((n) => {
          if (n !== want) throw new Error(`PUBLISH reached ${n} subscribers, expected ${want}`)
        }),
      )
    },
    // Request/response: the request is published on the responder's channel as
    // 'Q<from>:<id>:<data>', the answer on the requester's channel as 'A<id>:<data>'.
    respond(fn) {
      this.listen((m) => {
        if (m[0] !== 'Q') throw new Error(`expected a request, got ${m.slice(0, 16)}`)
        const a = m.indexOf(':')
        const b = m.indexOf(':', a + 1)
        pub.publish(channel(Number(m.slice(1, a))), `A${m.slice(a + 1, b)}:${fn(m.slice(b + 1))}`).catch(() => {})
      }, 'string')
    },
    request(to, data) {
      if (waiting === null) {
        waiting = new Map()
        this.listen((m) => {
          const a = m.indexOf(':')
          const id = Number(m.slice(1, a))
          const w = waiting.get(id)
          if (m[0] !== 'A' || w === undefined) throw new Error(`unexpected answer ${m.slice(0, 16)}`)
          waiting.delete(id)
          w(m.slice(a + 1))
        }, 'string')
      }
      const id = nextId++
      return new Promise((resolve, reject) => {
        waiting.set(id, resolve)
        pub.publish(channel(to), `Q${rank}:${id}:${data}`).catch(reject)
      })
    },
    async drain() {
      await small.drain()
      await bulk.drain()
    },
    async close() {
      sub.disconnect()
      pub.disconnect()
    },
  }
}

module.exports = { id: 'redis', primary, open }
