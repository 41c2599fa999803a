'use strict'
// cluster-shm, used the way a user who wants speed would use it:
//   send:      bus.write(to, data) (sync, one copy into the receiver's ring); when it returns
//              false (ring full) await bus.send(to, data), which waits for room on the sender
//              thread. Payloads larger than bus.maxWrite (the 1 MiB bulk case) go through
//              bus.send() directly, with a few in flight so the chunks pipeline.
//   broadcast: the same write/send per target, over the other workers (bus.broadcast() would
//              also deliver to the primary, which is not a receiver in this benchmark).
//   receive:   bus.subscribe(({ data }) => ...): the delivery thread wakes JS once per batch.
//   topics:    bus.subscribe(topic, cb) in the subscribers, bus.tryPublish(topic, data) in the
//              publisher; when it returns false (a ring full), await bus.publish(topic, data),
//              which waits for room (as write() falls back to await send(), and the socket
//              awaits 'drain'). A library without tryPublish: bus.publish() with at most 1024
//              in flight. Request/response: bus.respond(handler) and bus.request(to, data).
// Variants: payload kind (buffer, string, value), spinMicros (the opt-in spinning receiver), and
// `poll`: both sides busy-poll bus.read() on the JS thread (latency only; no wake-up at all).

const path = require('node:path')
const { Window, sleep, now } = require('../lib/common')

// BENCH_LIB: load cluster-shm from elsewhere (e.g. a copy with an unstripped binary, for perf).
const lib = () => require(process.env.BENCH_LIB || path.join(__dirname, '..', '..'))

/** Cluster primary: creates the segment before the workers are forked (they find it by env). */
function primary({ workers }) {
  // BENCH_RING_SIZE: a smaller ring than the default (stress of the full-ring path).
  const ringSize = process.env.BENCH_RING_SIZE ? Number(process.env.BENCH_RING_SIZE) : undefined
  const bus = lib().masterInit({ workers, ringSize })
  return {
    serialization: 'json',
    info: { ringSize: bus.ringSize, maxWrite: bus.maxWrite, segment: bus.name },
    close: async () => bus.close(),
  }
}

async function open({ rank, variant }) {
  const bus = lib().workerInit({ index: rank, spinMicros: variant.spinMicros ?? 0 })
  const max = bus.maxWrite
  const bulk = new Window(4)
  const pubs = new Window(1024)
  let handler = null
  let sub = null
  let slow = 0 // write() or tryPublish() refused: ring full, fell back to send() or publish()
  const canTry = typeof bus.tryPublish === 'function'
  return {
    kind: variant.payload ?? 'buffer',
    bus,
    async link(peers) {
      // Every peer attached (workers attach concurrently).
      const deadline = Date.now() + 10_000
      for (;;) {
        const have = new Set(bus.peers())
        if (peers.every((p) => have.has(p))) return
        if (Date.now() > deadline) throw new Error(`peers ${peers} not attached: ${[...have]}`)
        await sleep(5)
      }
    },
    listen(fn) {
      handler = fn
      if (sub === null && !variant.poll) sub = bus.subscribe((msg) => handler(msg.data))
    },
    send(to, data) {
      if (data.length > max) return bulk.track(bus.send(to, data))
      if (bus.write(to, data)) return true
      slow++
      return bus.send(to, data)
    },
    broadcast(targets, data) {
      if (data.length > max) {
        let r = true
        for (const t of targets) r = bulk.track(bus.send(t, data))
        return r
      }
      let wait = null
      for (let i = 0; i < targets.length; i++) {
        if (!bus.write(targets[i], data)) slow++, (wait ??= []).push(bus.send(targets[i], data))
      }
      return wait === null ? true : Promise.all(wait)
    },
    // ---- topics: bus.subscribe(topic, cb) / bus.tryPublish(topic, data), else bus.publish(topic,
    // data) with at most 1024 in flight; each must report that it reached `subscribers.length`.
    async subscribe(topic) {
      bus.subscribe(topic, (msg) => handler(msg.data))
    },
    publish(topic, data, subscribers) {
      // In every subscriber's ring, no promise (BENCH_LIB may be a version without tryPublish).
      if (canTry && bus.tryPublish(topic, data)) return true
      slow++
      const want = subscribers.length
      const sent = bus.publish(topic, data).then((n) => {
        if (n !== want) throw new Error(`publish reached ${n} processes, expected ${want}`)
      })
      // A ring is full: wait for room once, as documented for tryPublish(), rather than queue
      // up to 1024 publishes on the sender thread, each settled by its own completion.
      return canTry ? sent : pubs.track(sent)
    },
    // ---- request/response: bus.respond(handler) / bus.request(to, data) ----
    respond(fn) {
      bus.respond((data) => fn(data))
    },
    request(to, data) {
      return bus.request(to, data, { timeout: 5000 })
    },
    drain: async () => {
      await bulk.drain()
      await pubs.drain()
    },
    stats() {
      const s = { fullRing: slow }
      slow = 0
      return s
    },
    /** Poll variant: strict ping-pong with bus.read() spinning on the JS thread (bounded). */
    pollPing(peer, msg, warmMs, durationMs, maxRounds) {
      const rtts = new Float64Array(maxRounds)
      let n = 0
      const warmEnd = now() + warmMs * 1e3
      let end = Infinity
      for (let round = 0; ; round++) {
        const t0 = now()
        if (!bus.write(peer, msg)) throw new Error('write refused in ping-pong')
        const giveUp = t0 + 1e6
        for (;;) {
          if (bus.read() !== null) break
          if (now() > giveUp) throw new Error(`no pong within 1 s (round ${round})`)
        }
        const t1 = now()
        if (end === Infinity) {
          if (t1 >= warmEnd && round >= 200) end = t1 + durationMs * 1e3
          continue
        }
        rtts[n++] = t1 - t0
        if (n >= maxRounds || t1 >= end) break
      }
      bus.write(peer, 'STOP')
      return rtts.subarray(0, n)
    },
    pollPong(peer, limitMs) {
      const giveUp = now() + limitMs * 1e3
      let n = 0
      for (;;) {
        const m = bus.read()
        if (m !== null) {
          if (m.data === 'STOP') return n
          if (!bus.write(peer, m.data)) throw new Error('write refused in ping-pong')
          n++
        } else if (now() > giveUp) {
          throw new Error('pong loop gave up (no STOP)')
        }
      }
    },
    async close() {
      bus.close()
    },
  }
}

module.exports = { id: 'cluster-shm', primary, open }
