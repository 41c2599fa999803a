'use strict'
// Primary side of the adapter fixtures (rate-limit-store.js, socketio.js, the chat example's
// test): stdin commands, where { cmd: 'stop' } disconnects the workers, closes the bus and prints
// { event: 'end' }; every other command goes to `onCommand`. Prints { event: 'exit', ... } for
// every worker that ends, with the fields `describe(worker)` adds.

const { cluster, write, commands } = require('./fixture')

function serveCommands(bus, onCommand = () => {}, describe = () => ({})) {
  cluster.on('exit', (worker, code, signal) => write({ event: 'exit', ...describe(worker), pid: worker.process.pid, code, signal }))
  const stop = commands((cmd) => {
    if (cmd.cmd !== 'stop') return onCommand(cmd)
    stop()
    cluster.disconnect(() => {
      bus.close()
      write({ event: 'end' })
    })
  })
}

module.exports = { serveCommands }
