'use strict'
// cluster-shm demo: a primary forks 4 workers, and the workers talk to each other DIRECTLY
// through shared memory. With plain Node, worker -> worker means worker -> primary -> worker
// over two IPC pipes (process.send); here the primary is not on the path at all.
//
//   1. ring relay    a token travels 0 -> 1 -> 2 -> 3 -> 0, many laps
//   2. broadcast     worker 1 says hello to every other process
//   3. structured    worker 3 sends the primary an object with a Date and a Map in it
//   4. burst         worker 1 fires 200,000 small messages at worker 2
//
// The primary only conducts: it starts each step with a message and waits for the report
// that the step is over, so the output reads in order.
//
// Run: npm start   (or: node examples/demo.js)

const cluster = require('node:cluster')
const fs = require('node:fs')
const util = require('node:util')
const { performance } = require('node:perf_hooks')
const { masterInit, workerInit, PRIMARY } = require('..')

const WORKERS = 4
const LAPS = 100 // of the ring relay
const BURST = 200_000 // messages of the burst

/** 'worker 2' or 'primary': how the narrative names an address. */
const who = (address) => (address === PRIMARY ? 'primary' : `worker ${address}`)
const DIRECT = '(shared memory, primary not involved)'
const say = (line) => console.log(`   ${line}`)

if (cluster.isPrimary) primary()
else worker()

// ------------------------------------------------------------------------------------------------
// The primary

async function primary() {
  // Never hang: if something goes wrong, give up after 30 s.
  const watchdog = setTimeout(() => {
    console.error('demo: timed out')
    for (const w of Object.values(cluster.workers)) w.kill()
    process.exit(1)
  }, 30_000)
  watchdog.unref()

  // Create the shared-memory segment BEFORE forking: workers find it through the environment.
  const bus = masterInit({ workers: WORKERS })
  const mailbox = subscribeMailbox(bus)
  console.log(`cluster-shm demo: a primary and ${WORKERS} workers on one shared-memory segment (${bus.name})`)

  for (let i = 0; i < WORKERS; i++) cluster.fork()

  // Workers leave when told "bye" at the end; then the primary removes the segment. A worker
  // dying before that ends the demo with an error.
  let finishing = false
  let exited = 0
  cluster.on('exit', (w, code, signal) => {
    if (!finishing || code !== 0) {
      console.error(`demo: a worker (pid ${w.process.pid}) exited unexpectedly (${signal ?? code})`)
      process.exit(1)
    }
    if (++exited < WORKERS) return
    bus.close() // removes the segment (would also happen at exit)
    const gone = process.platform !== 'linux' || !fs.existsSync(`/dev/shm${bus.name}`)
    console.log(`primary: ${WORKERS} workers exited, segment ${gone ? 'removed' : 'STILL PRESENT'}. Bye!`)
  })

  // Every worker says 'ready' once attached, so everybody can reach everybody from now on.
  const ready = await mailbox.receive('ready', WORKERS)
  console.log(`primary: workers ${ready.map((m) => m.from).sort().join(', ')} attached\n`)

  console.log(`1. Ring relay: a token goes around 0 -> 1 -> 2 -> 3 -> 0, ${LAPS} times`)
  await bus.send(0, { type: 'start-ring', laps: LAPS })
  await mailbox.receive('ring-done')

  console.log('\n2. Broadcast: worker 1 -> every other process')
  await bus.send(1, { type: 'start-broadcast' })
  // The primary is attached too, so it gets the broadcast like the workers do.
  const [hello] = await mailbox.receive('hello')
  say(`primary  <- worker ${hello.from}  "${hello.data.text}"`)
  await mailbox.receive('got-hello', WORKERS - 1)

  console.log('\n3. Structured message: worker 3 -> primary')
  say('primary  -> worker 3  "status, please?"')
  await bus.send(3, { type: 'status-please' })
  const [status] = await mailbox.receive('status')
  const { data } = status
  say(`primary  <- worker ${status.from}  ${util.inspect(data, { breakLength: Infinity })}`)
  say(`(a structured clone, not JSON: startedAt is a ${data.startedAt.constructor.name}, received is a ${data.received.constructor.name})`)

  console.log(`\n4. Burst: worker 1 -> worker 2, ${BURST.toLocaleString('en-US')} small messages`)
  await bus.send(1, { type: 'start-burst', to: 2, count: BURST })
  await mailbox.receive('burst-done')

  // The end: the workers close their side and leave (see the 'exit' handler above).
  console.log('\nprimary: all done, broadcasting "bye"')
  finishing = true
  await bus.broadcast({ type: 'bye' })
}

/** The primary's messages, waited for by type: `await mailbox.receive('ready', 4)`. */
function subscribeMailbox(bus) {
  const waiting = [] // messages nobody asked for yet
  let wakeUp = () => {}
  bus.subscribe((msg) => {
    waiting.push(msg)
    wakeUp()
  })
  return {
    async receive(type, count = 1) {
      const got = []
      while (got.length < count) {
        const i = waiting.findIndex((msg) => msg.data.type === type)
        if (i >= 0) got.push(...waiting.splice(i, 1))
        else await new Promise((resolve) => (wakeUp = resolve))
      }
      return got
    },
  }
}

// ------------------------------------------------------------------------------------------------
// A worker

function worker() {
  const bus = workerInit() // attaches to the primary's segment, takes a free worker index
  const me = bus.index
  const next = (me + 1) % WORKERS
  const received = new Map() // messages received, by sender (reported in step 3)
  let burst = null // progress of an incoming burst (step 4)

  const handlers = {
    // 1. Ring relay. Worker 0 launches the token; everyone passes it on to the next worker.
    // The first lap is narrated; the others are timed by worker 0.
    'start-ring'({ laps }) {
      say(`worker 0 -> worker 1   token, lap 1  ${DIRECT}`)
      bus.send(next, { type: 'token', lap: 1, laps })
    },
    token(token) {
      if (me === 0) {
        if (token.lap === 1) token.startedAt = performance.now() // lap 1 done: start timing
        if (token.lap === token.laps) {
          const hops = (token.laps - 1) * WORKERS
          const ms = performance.now() - token.startedAt
          say(`worker 0: token is back. Laps 2 to ${token.laps} (${hops} hops) took ${ms.toFixed(1)} ms: ${((ms * 1000) / hops).toFixed(1)} µs per hop`)
          return bus.send(PRIMARY, { type: 'ring-done' })
        }
        token.lap++
      } else if (token.lap === 1) {
        say(`worker ${me} -> worker ${next}   token, lap 1  ${DIRECT}`)
      }
      bus.send(next, token)
    },

    // 2. Broadcast: one call, one copy into the ring of each attached process.
    async 'start-broadcast'() {
      const text = `hello from worker ${me}`
      say(`worker ${me} -> ${bus.peers().map(who).join(', ')}  "${text}"  (one broadcast)`)
      await bus.broadcast({ type: 'hello', text })
    },
    hello({ text }, from) {
      say(`worker ${me} <- worker ${from}  "${text}"  ${DIRECT}`)
      bus.send(PRIMARY, { type: 'got-hello' })
    },

    // 3. Structured message: anything structured-clonable goes (Date, Map, Set, BigInt, ...).
    'status-please'() {
      const status = { type: 'status', pid: process.pid, startedAt: new Date(Date.now() - process.uptime() * 1000), received }
      say(`worker ${me} -> primary   { type: 'status', pid, startedAt: Date, received: Map }`)
      bus.send(PRIMARY, status)
    },

    // 4. Burst: write() is synchronous and returns false when the receiver's ring is full;
    // then `await send()` waits for room. The receiver checks order and measures the rate.
    async 'start-burst'({ to, count }) {
      say(`worker ${me} -> worker ${to}   ${count.toLocaleString('en-US')} messages "0", "1", "2", ...  ${DIRECT}`)
      await bus.send(to, { type: 'burst-start', count })
      for (let i = 0; i < count; i++) {
        const msg = String(i)
        if (!bus.write(to, msg)) await bus.send(to, msg)
      }
    },
    'burst-start'({ count }, from) {
      burst = { from, count, expected: 0, startedAt: performance.now() }
    },

    bye() {
      bus.close() // detach from the segment
      process.disconnect() // and leave the cluster: nothing keeps this process alive any more
    },
  }

  function onBurstMessage(text, from) {
    if (from !== burst.from || Number(text) !== burst.expected) throw new Error(`burst out of order: got "${text}" from ${who(from)}, expected "${burst.expected}"`)
    if (++burst.expected < burst.count) return
    const ms = performance.now() - burst.startedAt
    const rate = (burst.count / ms) * 1000
    say(`worker ${me} <- worker ${from}   ${burst.count.toLocaleString('en-US')} messages, all in order, in ${ms.toFixed(0)} ms: ${(rate / 1e6).toFixed(2)} million messages/s`)
    bus.send(PRIMARY, { type: 'burst-done' })
  }

  bus.subscribe(({ from, data }) => {
    received.set(who(from), (received.get(who(from)) ?? 0) + 1)
    if (typeof data === 'string') onBurstMessage(data, from)
    else handlers[data.type](data, from)
  })
  bus.send(PRIMARY, { type: 'ready' })
}
