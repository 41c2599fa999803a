'use strict'
// examples/socket.io-chat in a real headless browser (Debian's chromium, driven by
// playwright-core): two pages whose sockets are on different workers join a room, see each
// other in the presence list, see each other typing, and get each other's messages; a third
// page in another room gets none of it. A screenshot of the page is decoded and checked.

const test = require('ava')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { chromium } = require('playwright-core')

const { startProgram, cleanUp, waitForOutput, withTimeout } = require('./helpers/program')
const { segmentsOf } = require('./helpers/harness')
const { readPng } = require('./helpers/png')

const CHROMIUM = '/usr/bin/chromium'
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync']

test('two pages on different workers chat in a room: presence, typing, messages, and a screenshot', async (t) => {
  t.timeout(120_000)
  if (!fs.existsSync(CHROMIUM)) return t.fail(`${CHROMIUM} is missing: apt-get install -y chromium`)
  const server = startProgram('examples/socket.io-chat/server.js', { CLUSTER_SHM_SEGMENT: '', WORKERS: '3', PORT: '0' })
  t.teardown(() => cleanUp(server))
  const port = Number((await waitForOutput(server, /3 workers share http:\/\/localhost:(\d+)/, 30_000))[1])
  const url = `http://127.0.0.1:${port}/`

  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'cshm-chromium-'))
  const browser = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: FLAGS, viewport: { width: 900, height: 600 } })
  t.teardown(async () => {
    await browser.close().catch(() => {})
    fs.rmSync(profile, { recursive: true, force: true })
  })

  /** A page whose socket is connected; resolves with it and the worker its socket is on. */
  async function open() {
    const page = await browser.newPage()
    await page.goto(url)
    await page.waitForFunction(() => /^worker \d+$/.test(document.getElementById('worker').textContent))
    page.worker = Number((await page.textContent('#worker')).split(' ')[1])
    return page
  }
  const a = await open()
  let b = await open()
  for (let i = 0; i < 10 && b.worker === a.worker; i++) {
    await b.close()
    b = await open()
  }
  t.not(a.worker, b.worker, 'the two pages should be on different workers')
  t.log(`alice on worker ${a.worker}, bob on worker ${b.worker}`)

  async function join(page, name, room) {
    await page.bringToFront()
    await page.fill('#name', name)
    await page.fill('#roomName', room)
    await page.click('#join button')
    await page.waitForFunction((r) => document.getElementById('room').textContent === r, room)
  }
  const presence = (page) => page.$$eval('#presence li', (lis) => lis.map((li) => li.textContent))
  const waitText = (page, selector, text) => page.waitForFunction(([s, x]) => document.querySelector(s).textContent.includes(x), [selector, text], { timeout: 10_000 })

  await join(a, 'alice', 'lobby')
  await join(b, 'bob', 'lobby')
  await waitText(a, '#presence', 'bob')
  t.deepEqual(await presence(a), [`alice (worker ${a.worker})`, `bob (worker ${b.worker})`])
  t.deepEqual(await presence(b), await presence(a))
  await waitText(a, '#log', 'bob joined')

  // A third page in another room, on whatever worker.
  const c = await open()
  await join(c, 'carol', 'garden')

  // Bob types: Alice sees it, while he types and no longer once he sent the message.
  await b.bringToFront()
  await b.type('#text', 'hello alice')
  await waitText(a, '#typing', 'bob is typing')
  await b.press('#text', 'Enter')
  await waitText(a, '#log', 'bob: hello alice')
  await a.waitForFunction(() => document.getElementById('typing').textContent === '')
  t.regex(await a.textContent('#log'), new RegExp(`bob: hello alice \\(via worker ${b.worker}\\)`))

  await a.bringToFront()
  await a.type('#text', 'hi bob')
  await a.press('#text', 'Enter')
  await waitText(b, '#log', 'alice: hi bob')
  t.regex(await b.textContent('#log'), new RegExp(`alice: hi bob \\(via worker ${a.worker}\\)`))

  // Carol's room got none of it; and when Bob leaves, Alice's presence list shows it.
  t.false((await c.textContent('#log')).includes('hello alice'))
  t.deepEqual(await presence(c), [`carol (worker ${c.worker})`])
  await b.close()
  await waitText(a, '#log', 'bob left')
  await a.waitForFunction(() => document.querySelectorAll('#presence li').length === 1)
  t.deepEqual(await presence(a), [`alice (worker ${a.worker})`])

  // The screenshot: the page as drawn, the header bar in its colour and text in the log.
  const png = readPng(await a.screenshot())
  t.deepEqual([png.width, png.height], [900, 600])
  t.deepEqual(png.pixel(5, 5), [0x24, 0x47, 0x6b], 'the header bar')
  const box = await a.locator('#log li', { hasText: 'hello alice' }).boundingBox()
  let dark = 0
  for (let y = Math.floor(box.y); y < box.y + box.height; y++) for (let x = Math.floor(box.x); x < box.x + Math.min(box.width, 300); x++) if (png.pixel(x, y).every((v) => v < 100)) dark++
  t.true(dark > 50, `the message line should be drawn as dark text on light (${dark} dark pixels)`)

  await browser.close()
  server.kill('SIGINT')
  const { code, signal } = await withTimeout(server.done, 15_000, 'the chat server to exit on SIGINT')
  t.deepEqual({ code, signal }, { code: 0, signal: null }, server.stderrText)
  t.deepEqual(segmentsOf(server.pid), [])
})
