'use strict'
// Shared by the socket.io adapter tests (socketio.spec.js, socketio-hosts.spec.js).

/** Records every `event` each client (socket) gets: returns the arrays of arguments, one array per client. */
function record(clients, event) {
  return clients.map((c) => {
    const got = []
    c.on(event, (...args) => got.push(args))
    return got
  })
}

module.exports = { record }
