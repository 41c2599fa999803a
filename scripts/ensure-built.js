// Builds the native addon when no binary for this platform is present (fresh clone), so that
// `npm start` works right after `npm ci`. Installs from npm carry prebuilt binaries instead.
const fs = require('node:fs')
const path = require('node:path')
const { execSync } = require('node:child_process')

const root = path.join(__dirname, '..')
const built = fs.readdirSync(root).some((f) => f.startsWith('cluster-shm.') && f.endsWith('.node'))
if (!built) {
  console.log('cluster-shm: building the native addon (first run, needs Rust)...')
  execSync('npm run build', { cwd: root, stdio: 'inherit' })
}
