'use strict'
// One instance of a PM2 cluster-mode app (see ecosystem.config.js): every instance calls join()
// with the same name and PM2's NODE_APP_INSTANCE as its index; there is no primary to call
// masterInit. GET / counts hits across all instances in a shared map and tells the other
// instances about it; GET /peers lists the
// instances attached now and the segment's name.

const http = require('node:http')
const { join } = require('../..') // require('cluster-shm') in your app

const bus = join({ name: 'pm2-example', workers: Number(process.env.INSTANCES ?? 4) })
const hits = bus.map('hits')
let heard = 0
bus.on('message', () => heard++)

http
  .createServer((req, res) => {
    if (req.url === '/peers') return res.end(JSON.stringify({ index: bus.index, peers: bus.peers(), segment: bus.name }) + '\n')
    const total = hits.increment('total')
    bus.broadcast({ hit: total }).catch(() => {})
    res.end(JSON.stringify({ index: bus.index, total, heardFromOthers: heard }) + '\n')
  })
  .listen(Number(process.env.PORT ?? 3000))
