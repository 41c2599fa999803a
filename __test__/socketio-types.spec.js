'use strict'
// The subpath exports of package.json: `cluster-shm/socket.io` and `cluster-shm/express-rate-limit`
// resolve (through "exports", as users' require() does) to lib/, the root still resolves to
// index.js, and their types (lib/*.d.ts, via the exports' "types") type-check in use; bad
// arguments of the adapters are refused with ERR_INVALID_ARG.
const test = require('ava')
const path = require('node:path')
const ts = require('typescript')

const root = path.join(__dirname, '..')

test('the subpaths resolve through "exports", and the root entry still does', (t) => {
  t.is(require.resolve('cluster-shm'), path.join(root, 'index.js'))
  t.is(require.resolve('cluster-shm/socket.io'), path.join(root, 'lib', 'socket.io.js'))
  t.is(require.resolve('cluster-shm/express-rate-limit'), path.join(root, 'lib', 'express-rate-limit.js'))
  t.is(require('cluster-shm/package.json').name, 'cluster-shm')
  t.is(typeof require('cluster-shm/socket.io').createAdapter, 'function')
  t.is(typeof require('cluster-shm/express-rate-limit').ClusterShmStore, 'function')
  t.is(require('cluster-shm').masterInit, require('..').masterInit)
  t.throws(() => require.resolve('cluster-shm/lib/bus.js'), { code: 'ERR_PACKAGE_PATH_NOT_EXPORTED' })
})

test('bad arguments are ClusterShmErrors with code ERR_INVALID_ARG', (t) => {
  const { createAdapter } = require('cluster-shm/socket.io')
  const { ClusterShmStore } = require('cluster-shm/express-rate-limit')
  t.throws(() => createAdapter({}), { code: 'ERR_INVALID_ARG', message: /bus must be the Bus/ })
  const { bridgeTopics } = require('cluster-shm/socket.io')
  t.deepEqual(bridgeTopics(), ['socket.io.*'])
  t.deepEqual(bridgeTopics('app'), ['app.*'])
  for (const bad of ['', 'a*', 'a#b', 1]) t.throws(() => bridgeTopics(bad), { code: 'ERR_INVALID_ARG', message: /prefix/ })
  t.throws(() => new ClusterShmStore({ bus: null }), { code: 'ERR_INVALID_ARG', message: /options.bus/ })
  t.throws(() => new ClusterShmStore(), { code: 'ERR_INVALID_ARG' })
})

test('a namespace too long for its topic names is refused when it is created, the longest that fits works', async (t) => {
  const http = require('node:http')
  const { Server } = require('socket.io')
  const { masterInit } = require('cluster-shm')
  const { createAdapter } = require('cluster-shm/socket.io')
  const bus = masterInit({ workers: 1, ringSize: 4096 })
  t.teardown(() => bus.close())
  for (const prefix of ['socket.io', 'p']) {
    const io = new Server(http.createServer(), { adapter: createAdapter(bus, { prefix }) })
    // Its longest topic is `<prefix>#local.<namespace>.<16-byte uid>`, at most 128 bytes.
    const longest = 128 - prefix.length - '#local.'.length - 1 - 16
    t.is(io.of('/' + 'x'.repeat(longest - 1)).name.length, longest)
    t.throws(() => io.of('/' + 'x'.repeat(longest)), { code: 'ERR_INVALID_ARG', message: /is too long for a topic name \(at most 104 bytes with the prefix\)/ }, prefix)
    // '.' becomes '%2E' in topic names: 3 bytes each.
    t.throws(() => io.of('/' + '.'.repeat(Math.ceil(longest / 3))), { code: 'ERR_INVALID_ARG', message: /too long/ }, prefix)
    await io.close()
  }
})

test('adapters-usage.ts type-checks under --strict (node16 resolution, through "exports")', (t) => {
  const file = path.join(__dirname, 'types', 'adapters-usage.ts')
  const program = ts.createProgram([file], { strict: true, noEmit: true, types: ['node'], esModuleInterop: true, skipLibCheck: true, module: ts.ModuleKind.Node16, moduleResolution: ts.ModuleResolutionKind.Node16 })
  const diagnostics = ts.getPreEmitDiagnostics(program).map((d) => `${d.file ? path.basename(d.file.fileName) : ''}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`)
  t.deepEqual(diagnostics, [])
})
