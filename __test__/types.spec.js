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
  const bus = exports.find((s) => s.name === 'Bus')
  const members = [...bus.members.keys()].filter((k) => k !== '__constructor')
  return { values, members }
}

test('index.d.ts declares exactly the values index.js exports', (t) => {
  const { values } = declarations()
  t.deepEqual(new Set(values), new Set(Object.keys(api)))
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
