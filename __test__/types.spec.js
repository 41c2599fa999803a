// The types in index.d.ts must match the runtime of index.js: the exported names, the members
// of Bus, and the usage in types/usage.ts (compiled with --strict, errors where expected).
const test = require('ava')
const path = require('node:path')
const ts = require('typescript')
const { EventEmitter } = require('node:events')
const api = require('..')

const root = path.join(__dirname, '..')

function declarations() {
  const file = path.join(root, 'index.d.ts')
  const program = ts.createProgram([file], { strict: true, types: ['node'] })
  const checker = program.getTypeChecker()
  const moduleSymbol = checker.getSymbolAtLocation(program.getSourceFile(file))
  const exports = checker.getExportsOfModule(moduleSymbol)
  const values = exports.filter((s) => s.flags & (ts.SymbolFlags.Value)).map((s) => s.name)
  const membersOf = (name) => [...exports.find((s) => s.name === name).members.keys()].filter((k) => k !== '__constructor')
  return { values, members: membersOf('Bus'), membersOf }
}

test('index.d.ts declares exactly the values index.js exports', (t) => {
  const { values } = declarations()
  t.deepEqual([...values].sort(), Object.keys(api).sort())
  t.is(api.PRIMARY, -1)
  t.is(api.SEGMENT_ENV, 'CLUSTER_SHM_SEGMENT')
})

test('every declared Bus member exists at runtime, and every runtime one is declared', (t) => {
  const { members } = declarations()
  const runtime = new Set(Object.getOwnPropertyNames(api.Bus.prototype).filter((k) => k !== 'constructor'))
  const emitter = new Set(Object.getOwnPropertyNames(EventEmitter.prototype))
  for (const m of members) t.true(runtime.has(m) || emitter.has(m), `declared but missing at runtime: ${m}`)
  for (const m of runtime) t.true(members.includes(m), `exists at runtime but is not declared: ${m}`)
})

test('usage.ts type-checks under --strict, with errors exactly where expected', (t) => {
  const file = path.join(__dirname, 'types', 'usage.ts')
  const program = ts.createProgram([file], { strict: true, noEmit: true, types: ['node'], esModuleInterop: true })
  const diagnostics = ts.getPreEmitDiagnostics(program).map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'))
  t.deepEqual(diagnostics, [])
})

test('Semaphore, Permit, Region and SharedMap: declared members match real instances', async (t) => {
  const { membersOf } = declarations()
  const bus = api.masterInit({ workers: 1, ringSize: 4096 })
  try {
    const sem = bus.semaphore('types')
    const instances = {
      Semaphore: sem,
      Permit: await sem.acquire(),
      Region: bus.region('types-region', 16),
      SharedMap: bus.map('types-map'),
    }
    for (const [name, obj] of Object.entries(instances)) {
      const runtime = new Set([...Object.getOwnPropertyNames(Object.getPrototypeOf(obj)), ...Object.keys(obj)].filter((k) => k !== 'constructor'))
      const declared = membersOf(name)
      for (const m of declared) t.true(runtime.has(m), `${name}.${m} is declared but missing at runtime`)
      for (const m of runtime) t.true(declared.includes(m), `${name}.${m} exists at runtime but is not declared`)
    }
  } finally {
    bus.close()
  }
})
