'use strict'
// The two error classes users see, and fail() that throws a ClusterShmError with a stable code.
// Errors thrown by the addon itself are ClusterShmErrors too: the class is registered with it here.

const native = require('../binding.js')

class ClusterShmError extends Error {
  constructor(code, message) {
    super(message)
    this.name = 'ClusterShmError'
    this.code = code
  }
}
native.registerErrorClass(ClusterShmError)

const fail = (code, message) => {
  throw new ClusterShmError(code, message)
}

/** The error a request handler threw, carried back to the requester. */
class RemoteError extends Error {
  constructor(message, code, from) {
    super(message)
    this.name = 'RemoteError'
    this.code = code
    this.from = from
  }
}

module.exports = { ClusterShmError, RemoteError, fail }
