'use strict'
// Odd inputs a careless or hostile caller passes: Proxies (also revoked ones) around Buffers and
// options, detached views, getters that throw, subclassed typed arrays. Every one gets a
// ClusterShmError with a documented code, or (subclassed typed arrays) a documented result.
// Runs in the ava process (masterInit + workerInit({ name }); every bus is closed at the end).

const test = require('ava')
const { masterInit, workerInit, PRIMARY, ClusterShmError } = require('..')

const m = masterInit({ workers: 2, ringSize: 4096 })
const w0 = workerInit({ name: m.name })
const w1 = workerInit({ name: m.name })
const map = w0.map('hostile', { capacity: 8 })
const region = w0.region('hostile-region', 64)
const sem = w0.semaphore('hostile-sem')
m.respond(() => 'answer')
test.after.always(() => {
  for (const b of [w0, w1, m]) b.close()
})

const proxyOfBuffer = () => new Proxy(Buffer.from('abc'), {})
const revoked = () => {
  const { proxy, revoke } = Proxy.revocable(Buffer.from('abc'), {})
  revoke()
  return proxy
}
const detached = (view = new Uint8Array(16)) => {
  structuredClone(view.buffer, { transfer: [view.buffer] })
  return view
}
const throwingGetter = (name) => Object.defineProperty({}, name, { enumerable: true, get: () => { throw new Error(`getter ${name} throws`) } })
const revokedOptions = () => {
  const { proxy, revoke } = Proxy.revocable({}, {})
  revoke()
  return proxy
}
const revokedSignal = () => {
  const { proxy, revoke } = Proxy.revocable(new AbortController().signal, {})
  revoke()
  return proxy
}

// [label, call, code, async]
const TABLE = [
  // payloads: a Proxy is not bytes, and v8.serialize cannot clone it
  ['write(Proxy of a Buffer)', () => w0.write(1, proxyOfBuffer()), 'ERR_UNSERIALIZABLE'],
  ['write(revoked Proxy)', () => w0.write(1, revoked()), 'ERR_UNSERIALIZABLE'],
  ['write(object with a getter that throws)', () => w0.write(1, throwingGetter('x')), 'ERR_UNSERIALIZABLE'],
  ['write(detached Uint8Array)', () => w0.write(1, detached()), 'ERR_INVALID_ARG'],
  ['write(detached Buffer)', () => w0.write(1, detached(Buffer.alloc(16))), 'ERR_INVALID_ARG'],
  ['send(Proxy of a Buffer)', () => w0.send(1, proxyOfBuffer()), 'ERR_UNSERIALIZABLE', true],
  ['send(revoked Proxy)', () => w0.send(1, revoked()), 'ERR_UNSERIALIZABLE', true],
  ['send(detached Uint8Array)', () => w0.send(1, detached()), 'ERR_INVALID_ARG', true],
  ['broadcast(Proxy of a Buffer)', () => w0.broadcast(proxyOfBuffer()), 'ERR_UNSERIALIZABLE', true],
  ['broadcast(revoked Proxy)', () => w0.broadcast(revoked()), 'ERR_UNSERIALIZABLE', true],
  ['broadcast(detached Uint8Array)', () => w0.broadcast(detached()), 'ERR_INVALID_ARG', true],
  ['publish(t, Proxy of a Buffer)', () => w0.publish('t', proxyOfBuffer()), 'ERR_UNSERIALIZABLE', true],
  ['publish(t, detached Uint8Array)', () => w0.publish('t', detached()), 'ERR_INVALID_ARG', true],
  ['request(Proxy of a Buffer)', () => w0.request(PRIMARY, proxyOfBuffer(), { timeout: 100 }), 'ERR_UNSERIALIZABLE', true],
  ['map.set(k, Proxy of a Buffer)', () => map.set('k', proxyOfBuffer()), 'ERR_UNSERIALIZABLE'],
  ['map.set(k, revoked Proxy)', () => map.set('k', revoked()), 'ERR_UNSERIALIZABLE'],
  ['map.set(k, detached Uint8Array)', () => map.set('k', detached()), 'ERR_INVALID_ARG'],
  ['map.compareAndSet(k, undefined, Proxy of a Buffer)', () => map.compareAndSet('k', undefined, proxyOfBuffer()), 'ERR_UNSERIALIZABLE'],
  ['region.write(0, Proxy of a Buffer)', () => region.write(0, proxyOfBuffer()), 'ERR_INVALID_ARG'],
  ['region.write(0, revoked Proxy)', () => region.write(0, revoked()), 'ERR_INVALID_ARG'],
  ['region.write(0, detached Uint8Array)', () => region.write(0, detached()), 'ERR_INVALID_ARG'],
  // options: getters that throw, revoked Proxies
  ['send(.., options with a throwing getter)', () => w0.send(1, 'x', throwingGetter('timeout')), 'ERR_INVALID_ARG', true],
  ['send(.., revoked Proxy options)', () => w0.send(1, 'x', revokedOptions()), 'ERR_INVALID_ARG', true],
  ['broadcast(.., options with a throwing getter)', () => w0.broadcast('x', throwingGetter('timeout')), 'ERR_INVALID_ARG', true],
  ['request(.., options with a throwing getter)', () => w0.request(PRIMARY, 'x', throwingGetter('method')), 'ERR_INVALID_ARG', true],
  ['request(.., { signal: revoked Proxy })', () => w0.request(PRIMARY, 'x', { signal: revokedSignal() }), 'ERR_INVALID_ARG', true],
  ['sem.acquire(options with a throwing getter)', () => sem.acquire(throwingGetter('timeout')), 'ERR_INVALID_ARG', true],
  ['sem.acquire({ signal: revoked Proxy })', () => sem.acquire({ signal: revokedSignal() }), 'ERR_INVALID_ARG', true],
  ['bus.map(name, options with a throwing getter)', () => w0.map('m2', throwingGetter('capacity')), 'ERR_INVALID_ARG'],
  ['bus.semaphore(name, revoked Proxy options)', () => w0.semaphore('s2', revokedOptions()), 'ERR_INVALID_ARG'],
  ['workerInit(options with a throwing getter)', () => workerInit(throwingGetter('name')), 'ERR_INVALID_ARG'],
  ['masterInit(revoked Proxy options)', () => masterInit(revokedOptions()), 'ERR_INVALID_ARG'],
]

for (const [label, call, code, async] of TABLE) {
  test.serial(`${label} -> ${code}`, async (t) => {
    let err = null
    let ret
    try {
      ret = call()
    } catch (e) {
      err = e
    }
    if (async) {
      t.is(err, null, 'does not throw synchronously')
      err = await ret.then(() => null, (e) => e)
    }
    t.true(err instanceof ClusterShmError, `a ClusterShmError, got ${err?.constructor?.name}: ${err?.message}`)
    t.is(err?.code, code, err?.message)
  })
}

test.serial('nothing of the refused calls arrived', (t) => {
  t.is(w1.read(), null)
  t.is(m.read(), null)
  t.is(map.size, 0)
})

test.serial('a subclassed Uint8Array travels as a value and arrives as a Uint8Array; a Buffer subclass as bytes', async (t) => {
  class Bytes extends Uint8Array {}
  class MyBuffer extends Buffer {}
  await w0.send(1, Bytes.from([1, 2, 3]))
  const a = w1.read()
  t.is(a.data.constructor, Uint8Array)
  t.deepEqual([...a.data], [1, 2, 3])
  t.true(w0.write(1, Object.setPrototypeOf(Buffer.from([4, 5]), MyBuffer.prototype)))
  w0.flush()
  const b = w1.read()
  t.true(Buffer.isBuffer(b.data))
  t.deepEqual([...b.data], [4, 5])
  class Floats extends Float64Array {}
  map.set('f', Floats.from([1.5]))
  t.deepEqual(map.get('f'), new Float64Array([1.5]))
  region.write(0, Bytes.from([9, 8]))
  t.deepEqual([...region.read(0, 2)], [9, 8], 'region.write takes any Uint8Array, subclasses included')
  map.delete('f')
})
