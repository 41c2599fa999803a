// The examples run as real programs: examples/demo.js must tell its story and exit cleanly, and
// the chat server must deliver every client's message to every other client, whatever worker
// each one is connected to, then stop on SIGINT leaving nothing in /dev/shm.
const test = require('ava')
const net = require('node:net')
const { WebSocket } = require('ws')

const { segmentsOf } = require('./helpers/harness')
const { startProgram, cleanUp, waitForOutput, withTimeout, sleep } = require('./helpers/program')

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
    server.on('error', reject)
  })
}

test('demo.js narrates direct worker-to-worker messaging and exits cleanly', async (t) => {
  t.timeout(60_000)
  const demo = startProgram('examples/demo.js')
  t.teardown(() => cleanUp(demo))

  const { code } = await withTimeout(demo.done, 30_000, 'demo.js to exit')
  const out = demo.stdoutText
  t.is(code, 0, `${out}\n${demo.stderrText}`)
  t.is(demo.stderrText, '')

  // 1. The ring relay, hop by hop, then its timing.
  for (let i = 0; i < 4; i++) {
    t.regex(out, new RegExp(`worker ${i} -> worker ${(i + 1) % 4} +token, lap 1 +\\(shared memory, primary not involved\\)`))
  }
  t.regex(out, /worker 0: token is back\. Laps 2 to 100 \(396 hops\) took [\d.]+ ms: [\d.]+ µs per hop/)
  // 2. The broadcast reaches the other three workers and the primary.
  t.regex(out, /worker 1 -> worker 0, worker 2, worker 3, primary +"hello from worker 1"/)
  for (const receiver of ['worker 0', 'worker 2', 'worker 3', 'primary ']) {
    t.regex(out, new RegExp(`${receiver} <- worker 1 +"hello from worker 1"`))
  }
  // 3. A structured clone: the Date and the Map survive the trip.
  t.regex(out, /primary +<- worker 3 +\{ type: 'status', pid: \d+, startedAt: \d{4}-\d\d-\d\dT.*received: Map\(\d+\) \{/)
  t.regex(out, /startedAt is a Date, received is a Map/)
  // 4. The burst, with its rate.
  t.regex(out, /worker 2 <- worker 1 +200,000 messages, all in order, in \d+ ms: [\d.]+ million messages\/s/)
  // The end.
  t.regex(out, /primary: 4 workers exited, segment removed\. Bye!/)
  t.deepEqual(segmentsOf(demo.pid), [])
})

/** Connects a WebSocket client, retrying while the server is not accepting yet. */
async function connect(url, deadline) {
  for (;;) {
    try {
      return await new Promise((resolve, reject) => {
        const ws = new WebSocket(url)
        ws.received = [] // chat messages
        ws.on('message', (raw) => {
          const msg = JSON.parse(raw)
          if (msg.type === 'welcome') {
            ws.user = msg.user
            ws.worker = msg.worker
            resolve(ws)
          } else {
            ws.received.push(msg)
          }
        })
        ws.on('error', reject)
      })
    } catch (err) {
      if (Date.now() > deadline) throw err
      await sleep(100)
    }
  }
}

test('chat server: every client gets every other client\'s message exactly once, across workers', async (t) => {
  t.timeout(60_000)
  const CLIENTS = 6
  const port = await freePort()
  const server = startProgram('examples/chat/server.js', { WORKERS: '3', PORT: String(port) })
  const clients = []
  t.teardown(() => {
    for (const ws of clients) ws.terminate()
    cleanUp(server)
  })

  await waitForOutput(server, new RegExp(`3 workers share http://localhost:${port}`), 20_000)
  const deadline = Date.now() + 10_000
  for (let i = 0; i < CLIENTS; i++) clients.push(await connect(`ws://localhost:${port}/?name=client${i}`, deadline))
  const workers = new Set(clients.map((ws) => ws.worker))
  t.log(`clients on workers: ${clients.map((ws) => ws.worker).join(', ')}`)
  t.true(workers.size > 1, 'the clients should be spread over several workers')

  clients.forEach((ws, i) => ws.send(`message ${i}`))
  // Wait until every client has the other clients' messages, then a little more for duplicates.
  const complete = () => clients.every((ws) => ws.received.length >= CLIENTS - 1)
  const until = Date.now() + 10_000
  while (!complete() && Date.now() < until) await sleep(20)
  await sleep(300)

  clients.forEach((ws, i) => {
    const got = ws.received.map((msg) => `${msg.text} from ${msg.user} on worker ${msg.worker}`).sort()
    const expected = clients
      .map((other, j) => `message ${j} from client${j} on worker ${other.worker}`)
      .filter((_, j) => j !== i)
      .sort()
    t.deepEqual(got, expected, `client${i} (worker ${ws.worker})`)
  })
  // The primary receives the broadcasts too, and logs them.
  clients.forEach((ws, i) => t.true(server.stdoutText.includes(`[worker ${ws.worker}] client${i}: message ${i}`)))

  // Ctrl-C: the server closes the connections, exits, and removes its segment.
  const closed = clients.map((ws) => new Promise((resolve) => ws.once('close', resolve)))
  server.kill('SIGINT')
  const { code, signal } = await withTimeout(server.done, 10_000, 'the chat server to exit on SIGINT')
  t.deepEqual({ code, signal }, { code: 0, signal: null }, server.stderrText)
  t.deepEqual(await withTimeout(Promise.all(closed), 5_000, 'clients to be disconnected'), Array(CLIENTS).fill(1001))
  t.deepEqual(segmentsOf(server.pid), [])
  t.is(server.stderrText, '')
})
